/* serve_opts.c — flags and environment variables of `barlowd serve`. */
#include "serve_opts.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum { T_STR, T_LONG, T_LLONG, T_BOOL, T_SYNC, T_PUBLISH, T_PERMILLE };

typedef struct opt_def {
    const char *flag;
    int type;
    size_t offset;
    long long lo, hi;
    const char *dflt;
    const char *help;
} opt_def;

#define O(f) offsetof(serve_opts, f)
static const opt_def defs[] = {
    {"--listen", T_STR, O(listen), 0, 0, "0.0.0.0:8080", "address and port to listen on"},
    {"--db", T_STR, O(db), 0, 0, "./data/barlowd.db", "SQLite database file (created if missing)"},
    {"--model", T_STR, O(model), 0, 0, "small",
     "tiny|small|resnet18|FILE.json (used when the database is new)"},
    {"--api-key", T_STR, O(api_key), 0, 0, NULL,
     "require Authorization: Bearer KEY on POST /train, DELETE and /snapshots"},
    {"--api-key-reads", T_BOOL, O(api_key_reads), 0, 1, "no",
     "yes: the key guards every route except /healthz and /readyz"},
    {"--min-images", T_LONG, O(min_images), 1, 100000000, "256",
     "train only while at least this many live images exist"},
    {"--publish-every", T_PUBLISH, O(publish_steps), 1, 1000000000, "500",
     "publish a model version every N steps, or every Ns seconds (e.g. 300s)"},
    {"--batch", T_LONG, O(batch), 2, 4096, "256", "training batch (images; two views each)"},
    {"--seed", T_LONG, O(seed), 0, 2147483647, "1", "seed of a new model and its sampling"},
    {"--threads", T_LONG, O(threads), 1, 256, "8", "HTTP worker threads"},
    {"--max-connections", T_LONG, O(max_connections), 1, 100000, "512",
     "simultaneous connections"},
    {"--timeout", T_LONG, O(timeout), 1, 3600, "30",
     "seconds a connection may stay idle before it is closed"},
    {"--max-body", T_LLONG, O(max_body), 1024, 1LL << 32, "16777216", "request body limit (bytes)"},
    {"--max-parts", T_LONG, O(max_parts), 1, 100000, "256", "multipart parts per request"},
    {"--max-pixels", T_LLONG, O(max_pixels), 1, 1LL << 40, "40000000",
     "refuse images with more pixels than this (checked before decoding)"},
    {"--keep-versions", T_LONG, O(keep_versions), 1, 1000, "3",
     "model versions kept besides the serving one"},
    {"--synchronous", T_SYNC, O(sync_full), 0, 1, "full",
     "full|normal: SQLite synchronous (full survives power loss)"},
    {"--embed-batch", T_LONG, O(embed_batch), 1, 4096, "64",
     "images per forward of the background embedders"},
    {"--ann-threshold", T_LONG, O(ann_threshold), 0, 1000000000, "100000",
     "indexed images from which searches walk an HNSW graph (\"exact\": false; 0: always exact)"},
    {"--train", T_BOOL, O(train), 0, 1, "yes", "no: serve only, never train"},
    {"--addr-file", T_STR, O(addr_file), 0, 0, NULL,
     "once ready, write the HOST:PORT really listened on here (barlowd health reads it)"},
    {"--idle-steps", T_LONG, O(idle_steps), 0, 1000000000, "0",
     "pause training after N steps without a new upload (0: never pause)"},
    {"--release-after", T_LONG, O(release_after), 0, 1000000000, "300",
     "free the training model after N seconds waiting for images or paused (0: keep it)"},
    {"--gate", T_BOOL, O(gate), 0, 1, "yes",
     "yes: a new version is swapped in only if its labelled k-NN is not worse (see --label-key)"},
    {"--gate-tolerance", T_PERMILLE, O(gate_tolerance), -1000, 1000, "0.005",
     "how much lower a new version's k-NN-20 may be than the serving one's (absolute)"},
    {"--label-key", T_STR, O(label_key), 0, 0, "label",
     "the meta key whose value labels an image for the quality monitor"},
    {"--max-snapshots", T_LONG, O(max_snapshots), 1, 100000, "20",
     "snapshots (POST /snapshots) kept at most in the database's directory, snapshots/"},
    {"--train-ranks", T_LONG, O(train_ranks), 1, 4096, "1",
     "R >= 2: train data-parallel in an MPI job of R `barlowd train-rank` processes (mpirun)"},
    {"--train-hosts", T_STR, O(train_hosts), 0, 0, NULL,
     "the job's hosts, as mpirun --host takes them (h1:1,h2:1; unset: all on this machine);"
     " barlowd must be at the same path on each"},
    {"--train-mpirun", T_STR, O(train_mpirun), 0, 0, "mpirun", "the MPI launcher"},
    {"--train-mpi-args", T_STR, O(train_mpi_args), 0, 0, NULL,
     "more launcher arguments, split at spaces (e.g. \"-x OMP_NUM_THREADS=1\")"},
    {"--train-retry", T_LONG, O(train_retry), 1, 86400, "30",
     "seconds after the training job ended (a rank died) before a new one starts"},
    {"--train-timeout", T_LONG, O(train_timeout), 1, 86400, "300",
     "a job's step unanswered after max(N s, 20 x the last step) ends the job (a rank hangs)"},
};
#define N_DEFS (sizeof defs / sizeof *defs)

/* BARLOWD_ + the flag without dashes, upper-cased, '-' → '_'. */
static void env_name(const char *flag, char *out, size_t n) {
    snprintf(out, n, "BARLOWD_");
    size_t j = strlen(out);
    for (const char *c = flag + 2; *c && j + 1 < n; c++)
        out[j++] = *c == '-' ? '_' : (*c >= 'a' && *c <= 'z' ? (char)(*c - 32) : *c);
    out[j] = 0;
}

static int set(serve_opts *o, const opt_def *d, const char *v, const char *from) {
    char *p = (char *)o + d->offset;
    if (d->type == T_STR) {
        *(const char **)p = v;
        return 0;
    }
    if (d->type == T_BOOL || d->type == T_SYNC) {
        const char *yes = d->type == T_SYNC ? "full" : "yes", *no = d->type == T_SYNC ? "normal" : "no";
        if (!strcmp(v, yes) || (d->type == T_BOOL && !strcmp(v, "1"))) {
            *(int *)p = 1;
            return 0;
        }
        if (!strcmp(v, no) || (d->type == T_BOOL && !strcmp(v, "0"))) {
            *(int *)p = 0;
            return 0;
        }
        fprintf(stderr, "error: %s %s: expected %s or %s\n", from, v, yes, no);
        return -1;
    }
    char *end;
    errno = 0;
    if (d->type == T_PERMILLE) { /* a fraction with at most three decimals, lo..hi thousandths */
        double f = strtod(v, &end);
        if (errno || end == v || *end || !(f * 1000 >= d->lo && f * 1000 <= d->hi)) {
            fprintf(stderr, "error: %s %s: expected a number from %g to %g\n", from, v,
                    d->lo / 1000.0, d->hi / 1000.0);
            return -1;
        }
        *(double *)p = f;
        return 0;
    }
    long long x = strtoll(v, &end, 10);
    int seconds = d->type == T_PUBLISH && *end == 's' && end[1] == 0;
    if (errno || end == v || (*end && !seconds) || x < d->lo || x > d->hi) {
        fprintf(stderr, "error: %s %s: expected an integer from %lld to %lld%s\n", from, v, d->lo,
                d->hi, d->type == T_PUBLISH ? " (steps), or seconds like 300s" : "");
        return -1;
    }
    if (d->type == T_PUBLISH) {
        o->publish_steps = seconds ? 0 : (long)x;
        o->publish_seconds = seconds ? (long)x : 0;
    } else if (d->type == T_LLONG) {
        *(long long *)p = x;
    } else {
        *(long *)p = (long)x;
    }
    return 0;
}

void serve_opts_help(FILE *out) {
    fprintf(out, "usage: barlowd serve [flags]\n\nEvery flag can also be set by its environment "
                 "variable; a flag wins over the variable.\n\n");
    for (size_t i = 0; i < N_DEFS; i++) {
        char env[64];
        env_name(defs[i].flag, env, sizeof env);
        fprintf(out, "  %-18s %-26s %s (default: %s)\n", defs[i].flag, env, defs[i].help,
                defs[i].dflt ? defs[i].dflt : "none");
    }
}

int serve_opts_parse(serve_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < N_DEFS; i++)
        if (defs[i].dflt && set(o, &defs[i], defs[i].dflt, defs[i].flag)) return -1;
    for (size_t i = 0; i < N_DEFS; i++) {
        char env[64];
        env_name(defs[i].flag, env, sizeof env);
        const char *v = getenv(env);
        if (v && *v && set(o, &defs[i], v, env)) return -1;
    }
    for (int a = 0; a < argc; a += 2) { /* flag, value */
        if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
            serve_opts_help(stdout);
            return 1;
        }
        size_t i = 0;
        while (i < N_DEFS && strcmp(argv[a], defs[i].flag)) i++;
        if (i == N_DEFS) {
            fprintf(stderr, "error: unknown argument '%s' (see barlowd serve --help)\n", argv[a]);
            return -1;
        }
        if (a + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value\n", argv[a]);
            return -1;
        }
        if (set(o, &defs[i], argv[a + 1], argv[a])) return -1;
    }
    if (o->api_key && !*o->api_key) o->api_key = NULL;
    if (o->api_key_reads && !o->api_key) {
        fprintf(stderr, "error: --api-key-reads needs --api-key\n");
        return -1;
    }
    return 0;
}

int serve_parse_listen(const char *listen, char *host, size_t n, int *port) {
    const char *colon;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':') return -1;
        if ((size_t)(close - listen - 1) >= n) return -1;
        memcpy(host, listen + 1, (size_t)(close - listen - 1));
        host[close - listen - 1] = 0;
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= n) return -1;
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = 0;
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 0 || p > 65535) return -1;
    *port = (int)p;
    return 0;
}
