/* cmd_search.c — `barlowd search IMAGE`: the stored images nearest to an image file, from a
 * server's POST /search (the image as the body, k and filter as query parameters), one per line:
 * id, score, label (meta.label, or "-"). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "remote.h"

enum { O_SERVER, O_KEY, O_K, O_FILTER, N_OPTS };
static const cli_opt opts[N_OPTS] = {
    [O_SERVER] = {"--server", 0},
    [O_KEY] = {"--api-key", 0},
    [O_K] = {"--k", 0},
    [O_FILTER] = {"--filter", 0},
};

/* Prints the results of a 200 answer; -1 when it does not have the documented shape. */
static int print_results(const json_t *body) {
    json_t *results = json_object_get(body, "results");
    if (!json_is_array(results)) return -1;
    if (json_array_size(results) == 0) /* stdout stays empty: say why on stderr */
        fprintf(stderr, "no neighbours: no stored image (matching the filter) has a vector yet\n");
    size_t i;
    json_t *hit;
    json_array_foreach(results, i, hit) {
        json_t *id = json_object_get(hit, "id"), *score = json_object_get(hit, "score");
        const char *label =
            json_string_value(json_object_get(json_object_get(hit, "meta"), "label"));
        if (!json_is_integer(id) || !json_is_number(score)) return -1;
        printf("%lld %.6f %s\n", (long long)json_integer_value(id), json_number_value(score),
               label ? label : "-");
    }
    return 0;
}

int cmd_search(int argc, char **argv) {
    const char *v[N_OPTS], *image[1];
    int n_pos;
    if (cli_parse(argc, argv, opts, N_OPTS, v, image, 1, &n_pos)) return CLI_BAD_INPUT;
    if (n_pos != 1) {
        fprintf(stderr, "error: barlowd search needs one image file\n");
        return CLI_BAD_INPUT;
    }
    long k = cli_parse_long("--k", v[O_K], 10, 1, 1000000);
    if (k < 0) return CLI_BAD_INPUT;
    if (v[O_FILTER]) { /* caught here rather than as the server's bad_filter: exit 2 */
        json_t *f = json_loads(v[O_FILTER], 0, NULL);
        int ok = json_is_object(f);
        json_decref(f);
        if (!ok) {
            fprintf(stderr, "error: --filter must be a JSON object\n");
            return CLI_BAD_INPUT;
        }
    }
    uint8_t *bytes;
    size_t len;
    if (cli_read_bytes(image[0], "image", &bytes, &len)) return CLI_BAD_INPUT;
    int rc = CLI_FAIL;
    char *filter = NULL, *path = NULL;
    remote *rm = NULL;
    if (remote_global_init()) {
        free(bytes);
        return CLI_FAIL;
    }
    if (v[O_FILTER] && !(filter = remote_escape(v[O_FILTER]))) goto done;
    size_t n = 64 + (filter ? strlen(filter) : 0);
    if (!(path = malloc(n))) goto done;
    snprintf(path, n, "/search?k=%ld%s%s", k, filter ? "&filter=" : "", filter ? filter : "");
    rm = remote_open(v[O_SERVER] ? v[O_SERVER] : "http://127.0.0.1:8080", v[O_KEY]);
    if (!rm) goto done;
    remote_reply rep = {0};
    /* application/octet-stream: the server sniffs PNG, JPEG or PGM from the bytes */
    int got = remote_post(rm, path, "application/octet-stream", bytes, len, &rep);
    if (got == 0 && rep.status == 200) {
        if (print_results(rep.json) == 0)
            rc = CLI_OK;
        else
            fprintf(stderr, "error: the server's answer has no results list\n");
    } else if (rep.status) {
        fprintf(stderr, "error: %ld %s: %s\n", rep.status, rep.code, rep.message);
    } else {
        fprintf(stderr, "error: %s: %s\n", rep.code, rep.message);
    }
    remote_reply_free(&rep);
done:
    if (rc == CLI_FAIL && !rm) fprintf(stderr, "error: out of memory\n");
    remote_close(rm);
    remote_global_cleanup();
    free(path);
    free(filter);
    free(bytes);
    return rc;
}
