/* cmd_upload.c — `barlowd upload DIR|FILE...`: sends image files to a server's POST /train in
 * multipart batches over several connections, skipping the ones it already holds, and ends with
 * what became of every file.
 *
 * Concurrency: --jobs worker threads, each with its own blocking curl easy handle (remote.h),
 * take the next batch from a shared cursor. Blocking code keeps a batch's steps (look up the
 * SHA-256s, send, drop a refused part and send again, back off and retry) in the order they
 * happen; the multi interface would make them a state machine per transfer, for nothing at a
 * handful of connections where the server's decoding and fsync, not the client, set the pace.
 *
 * Per file: its SHA-256 is looked up first (GET /images?sha256=), so a rerun after an
 * interruption only sends what is missing ("already there"). Per batch: meta (--meta, and with
 * --label-from-dir the parent directory's name as meta.label, which wins) goes once per request,
 * so with --label-from-dir a batch never mixes directories. The server stores a batch whole or
 * not at all and names the image it refused (error.part): that file is recorded as refused and
 * the rest is sent again without it. A 413 without a part (the body over the server's limit) is
 * split in halves. The batches are prepared (meta text included) before the workers start;
 * while they run, only the cursor, the results and the counts change, all under run.mu. */
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "remote.h"
#include "upload_files.h"
#include "upload_progress.h"

enum file_state { F_PENDING, F_SENT, F_THERE, F_REFUSED, F_FAILED };

/* What became of one file (the server's code and message when refused or failed). */
typedef struct file_result {
    enum file_state state;
    char code[64];
    char message[512];
} file_result;

/* files [first, first + n) of the list, sent with meta (malloc'd JSON text, or NULL). */
typedef struct batch {
    int first, n;
    char *meta;
} batch;

typedef struct run {
    const upload_list *list;  /* the files, in order */
    const batch *batches;
    int n_batches;
    const char *server;       /* base URL */
    const char *api_key;      /* NULL: none */
    pthread_mutex_t mu;       /* guards what follows */
    int next;                 /* the next batch a worker takes */
    int running;              /* workers not finished */
    file_result *res;         /* one per file */
    upload_counts counts;
} run;

/* Records file f's outcome (code and message for a refusal or failure). */
static void finish(run *R, int f, enum file_state st, const char *code, const char *message) {
    pthread_mutex_lock(&R->mu);
    file_result *r = &R->res[f];
    r->state = st;
    snprintf(r->code, sizeof r->code, "%s", code ? code : "");
    snprintf(r->message, sizeof r->message, "%s", message ? message : "");
    R->counts.done++;
    R->counts.sent += st == F_SENT;
    R->counts.there += st == F_THERE;
    R->counts.refused += st == F_REFUSED;
    R->counts.failed += st == F_FAILED;
    pthread_mutex_unlock(&R->mu);
}

static void add_bytes(run *R, uint64_t n) {
    pthread_mutex_lock(&R->mu);
    R->counts.bytes += n;
    pthread_mutex_unlock(&R->mu);
}

/* The lower-case hex SHA-256 of the bytes into hex[65]; -1 when libcrypto fails. */
static int sha256_hex(const void *bytes, size_t len, char hex[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_Digest(bytes, len, md, &n, EVP_sha256(), NULL) || n != 32) return -1;
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* The server's answer to "do you hold these bytes?": 1 yes, 0 no or cannot tell (the POST will
 * find out), -1 the server cannot be reached (out says why). */
static int already_there(remote *rm, const char *hex, remote_reply *out) {
    char path[128];
    snprintf(path, sizeof path, "/images?sha256=%s", hex);
    if (remote_get(rm, path, out)) return -1;
    return out->status == 200 && json_array_size(json_object_get(out->json, "images")) > 0;
}

/* Sends the files todo[0..m) (their bytes in data/len, indexed by the file's place in the
 * batch) as one request, dropping refused parts and splitting bodies the server finds too
 * large, until each file has its outcome. */
static void send_parts(run *R, remote *rm, const batch *b, int *todo, int m, uint8_t *const *data,
                       const size_t *len) {
    remote_part *parts = malloc((size_t)m * sizeof *parts);
    if (!parts) {
        for (int k = 0; k < m; k++)
            finish(R, b->first + todo[k], F_FAILED, "out_of_memory", "out of memory");
        return;
    }
    while (m > 0) {
        for (int k = 0; k < m; k++)
            parts[k] = (remote_part){R->list->files[b->first + todo[k]].path, data[todo[k]],
                                     len[todo[k]]};
        remote_reply rep = {0};
        int rc = remote_post_images(rm, "/train", parts, m, b->meta, &rep);
        add_bytes(R, rep.bytes_up);
        long st = rep.status;
        if (rc == 0 && st == 201) {
            json_t *ex = json_object_get(rep.json, "existed");
            for (int k = 0; k < m; k++)
                finish(R, b->first + todo[k],
                       json_is_true(json_array_get(ex, (size_t)k)) ? F_THERE : F_SENT, NULL, NULL);
            m = 0;
        } else if (rc == 0 && st >= 400 && st < 500 && rep.part >= 0 && rep.part < m) {
            finish(R, b->first + todo[rep.part], F_REFUSED, rep.code, rep.message);
            memmove(&todo[rep.part], &todo[rep.part + 1], (size_t)(m - rep.part - 1) * sizeof *todo);
            m--;
        } else if (rc == 0 && st == 413 && m > 1) {
            int half = m / 2;
            send_parts(R, rm, b, todo, half, data, len);
            send_parts(R, rm, b, todo + half, m - half, data, len);
            m = 0;
        } else {
            /* a refusal of the whole request (bad meta, the key), or the server is unwell */
            enum file_state fs = rc == 0 && st >= 400 && st < 500 ? F_REFUSED : F_FAILED;
            char msg[sizeof rep.message + 32];
            if (rc == 0 && fs == F_FAILED)
                snprintf(msg, sizeof msg, "HTTP %ld: %s", st, rep.message);
            else
                snprintf(msg, sizeof msg, "%s", rep.message);
            for (int k = 0; k < m; k++) finish(R, b->first + todo[k], fs, rep.code, msg);
            m = 0;
        }
        remote_reply_free(&rep);
    }
    free(parts);
}

/* One batch: reads its files, skips those the server holds, sends the rest. */
static void do_batch(run *R, remote *rm, const batch *b) {
    uint8_t **data = calloc((size_t)b->n, sizeof *data);
    size_t *len = calloc((size_t)b->n, sizeof *len);
    int *todo = calloc((size_t)b->n, sizeof *todo);
    int m = 0, i = 0;
    if (!data || !len || !todo || !rm) {
        for (; i < b->n; i++) finish(R, b->first + i, F_FAILED, "out_of_memory", "out of memory");
        goto done;
    }
    for (; i < b->n; i++) {
        int f = b->first + i;
        char hex[65];
        if (cli_read_bytes(R->list->files[f].path, "image", &data[i], &len[i])) {
            finish(R, f, F_FAILED, "unreadable", "cannot read the file (see stderr)");
            continue;
        }
        if (sha256_hex(data[i], len[i], hex)) {
            finish(R, f, F_FAILED, "internal", "SHA-256 failed");
            continue;
        }
        remote_reply rep = {0};
        int there = already_there(rm, hex, &rep);
        if (there < 0) { /* unreachable after every retry: so is the POST; the batch fails */
            for (int k = 0; k < m; k++)
                finish(R, b->first + todo[k], F_FAILED, rep.code, rep.message);
            for (; i < b->n; i++) finish(R, b->first + i, F_FAILED, rep.code, rep.message);
            remote_reply_free(&rep);
            goto done;
        }
        remote_reply_free(&rep);
        if (there)
            finish(R, f, F_THERE, NULL, NULL);
        else
            todo[m++] = i;
    }
    if (m) send_parts(R, rm, b, todo, m, data, len);
done:
    for (int k = 0; data && k < b->n; k++) free(data[k]);
    free(data);
    free(len);
    free(todo);
}

static void *worker(void *arg) {
    run *R = arg;
    remote *rm = remote_open(R->server, R->api_key);
    for (;;) {
        pthread_mutex_lock(&R->mu);
        int b = R->next < R->n_batches ? R->next++ : -1;
        pthread_mutex_unlock(&R->mu);
        if (b < 0) break;
        do_batch(R, rm, &R->batches[b]);
    }
    remote_close(rm);
    pthread_mutex_lock(&R->mu);
    R->running--;
    pthread_mutex_unlock(&R->mu);
    return NULL;
}

/* The meta text of a batch of files from dir `label`: --meta's keys with meta.label set when
 * label_from_dir. *out NULL when there is none. -1 when the label is not UTF-8 (message
 * printed) or out of memory. */
static int batch_meta(const json_t *meta, int label_from_dir, const char *label, char **out) {
    *out = NULL;
    if (!meta && !label_from_dir) return 0;
    json_t *m = meta ? json_deep_copy(meta) : json_object();
    if (!m) return -1;
    if (label_from_dir && json_object_set_new(m, "label", json_string(label))) {
        fprintf(stderr, "error: directory name '%s' is not UTF-8 (needed for meta.label)\n",
                label);
        json_decref(m);
        return -1;
    }
    *out = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return *out ? 0 : -1;
}

/* Cuts the list into batches of at most `size` files, never across directories when
 * label_from_dir. -1 on failure (batches freed). */
static int make_batches(const upload_list *l, int size, const json_t *meta, int label_from_dir,
                        batch **out, int *n_out) {
    batch *b = calloc((size_t)l->n + 1, sizeof *b);
    int n = 0;
    if (!b) return -1;
    for (int i = 0; i < l->n; i++) {
        batch *cur = n ? &b[n - 1] : NULL;
        if (!cur || cur->n == size ||
            (label_from_dir && strcmp(l->files[cur->first].dir, l->files[i].dir))) {
            cur = &b[n++];
            cur->first = i;
            if (batch_meta(meta, label_from_dir, l->files[i].label, &cur->meta)) {
                for (int k = 0; k < n; k++) free(b[k].meta);
                free(b);
                return -1;
            }
        }
        cur->n++;
    }
    *out = b;
    *n_out = n;
    return 0;
}

/* Runs the workers and reports progress on stderr until they are done. */
static int run_workers(run *R, int jobs) {
    pthread_t *th = calloc((size_t)jobs, sizeof *th);
    if (!th) return -1;
    int started = 0;
    R->running = jobs;
    for (; started < jobs; started++)
        if (pthread_create(&th[started], NULL, worker, R)) break;
    pthread_mutex_lock(&R->mu);
    R->running -= jobs - started;
    pthread_mutex_unlock(&R->mu);
    if (!started) {
        free(th);
        return -1;
    }
    int tty = isatty(STDERR_FILENO);
    double t0 = cli_now(), every = tty ? 0.25 : UPLOAD_PROGRESS_LINE_S, last = t0;
    for (;;) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&R->mu);
        int running = R->running;
        upload_counts c = R->counts;
        pthread_mutex_unlock(&R->mu);
        double now = cli_now();
        if (!running || now - last >= every) {
            if (tty || running) upload_progress(stderr, tty, &c, now - t0);
            last = now;
        }
        if (!running) break;
    }
    upload_progress_end(stderr, tty);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    free(th);
    return 0;
}

/* The summary on stdout: the counts, then every refused and failed file with the reason. */
static void summary(const run *R, double seconds) {
    const upload_counts *c = &R->counts;
    printf("sent %d, already there %d, refused %d, failed %d (%d files in %.1f s, %.1f images/s)\n",
           c->sent, c->there, c->refused, c->failed, c->total, seconds,
           seconds > 0 ? c->done / seconds : 0.0);
    for (int i = 0; i < R->list->n; i++) {
        const file_result *r = &R->res[i];
        if (r->state == F_REFUSED || r->state == F_FAILED)
            printf("%s %s: %s: %s\n", r->state == F_REFUSED ? "refused" : "failed",
                   R->list->files[i].path, r->code, r->message);
    }
    fflush(stdout);
}

/* The flags; their values land in the same order in cmd_upload's v[]. */
enum { O_SERVER, O_KEY, O_LABEL, O_META, O_BATCH, O_JOBS, N_OPTS };
static const cli_opt opts[N_OPTS] = {
    [O_SERVER] = {"--server", 0}, [O_KEY] = {"--api-key", 0}, [O_LABEL] = {"--label-from-dir", 1},
    [O_META] = {"--meta", 0},     [O_BATCH] = {"--batch", 0}, [O_JOBS] = {"--jobs", 0},
};

int cmd_upload(int argc, char **argv) {
    const char *v[N_OPTS];
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    int n_paths = 0, rc = CLI_BAD_INPUT;
    upload_list list = {0};
    json_t *meta = NULL;
    batch *batches = NULL;
    int n_batches = 0;
    run R = {0};
    if (!paths) return CLI_FAIL;
    if (cli_parse(argc, argv, opts, N_OPTS, v, paths, argc, &n_paths)) goto done;
    long size = cli_parse_long("--batch", v[O_BATCH], 32, 1, 10000);
    long jobs = cli_parse_long("--jobs", v[O_JOBS], 4, 1, 64);
    if (size < 0 || jobs < 0) goto done;
    if (!n_paths) {
        fprintf(stderr, "error: barlowd upload needs a directory or file to send\n");
        goto done;
    }
    if (v[O_META]) {
        json_error_t je;
        meta = json_loads(v[O_META], 0, &je);
        if (!json_is_object(meta)) {
            fprintf(stderr, "error: --meta must be a JSON object%s%s\n", meta ? "" : ": ",
                    meta ? "" : je.text);
            goto done;
        }
    }
    for (int i = 0; i < n_paths; i++) {
        char err[512];
        if (upload_files_add(&list, paths[i], err, sizeof err)) {
            fprintf(stderr, "error: %s\n", err);
            goto done;
        }
    }
    if (!list.n) fprintf(stderr, "note: no .png, .jpg, .jpeg or .pgm files under the paths given\n");
    rc = CLI_FAIL;
    if (make_batches(&list, (int)size, meta, v[O_LABEL] != NULL, &batches, &n_batches)) {
        fprintf(stderr, "error: out of memory (or a bad label) preparing %d files\n", list.n);
        goto done;
    }
    R = (run){.list = &list, .batches = batches, .n_batches = n_batches,
              .server = v[O_SERVER] ? v[O_SERVER] : "http://127.0.0.1:8080", .api_key = v[O_KEY]};
    R.counts.total = list.n;
    R.res = calloc((size_t)list.n + 1, sizeof *R.res);
    if (!R.res || pthread_mutex_init(&R.mu, NULL)) goto done;
    signal(SIGPIPE, SIG_IGN); /* a dropped connection is an error value, not a signal */
    if (remote_global_init()) {
        fprintf(stderr, "error: libcurl failed to initialise\n");
        goto done;
    }
    int workers = (int)jobs < n_batches ? (int)jobs : n_batches; /* no idle connections */
    double t0 = cli_now();
    int ran = run_workers(&R, workers > 0 ? workers : 1);
    remote_global_cleanup();
    pthread_mutex_destroy(&R.mu);
    if (ran) {
        fprintf(stderr, "error: cannot start the upload threads\n");
        goto done;
    }
    summary(&R, cli_now() - t0);
    rc = R.counts.refused || R.counts.failed ? CLI_FAIL : CLI_OK;
done:
    for (int i = 0; i < n_batches; i++) free(batches[i].meta);
    free(batches);
    free(R.res);
    json_decref(meta);
    upload_files_free(&list);
    free(paths);
    return rc;
}
