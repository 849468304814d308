/* cmd_health.c — `barlowd health`: the container's health probe. GETs /healthz from the local
 * server and exits 0 on 200, 1 otherwise (no curl in the image).
 *
 * Which address: --listen when given; else the address the server wrote to its --addr-file
 * (BARLOWD_ADDR_FILE: the one it really listens on, whatever flag or variable chose it); else
 * BARLOWD_LISTEN; else 127.0.0.1:8080. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "http_client.h"
#include "serve_opts.h"

int cmd_health(int argc, char **argv) {
    static const char *const known[] = {"--listen", "--addr-file", "--timeout", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *listen = cli_flag(argc, argv, "--listen");
    const char *addr_file = cli_flag(argc, argv, "--addr-file");
    if (!addr_file) addr_file = getenv("BARLOWD_ADDR_FILE");
    char written[300];
    if (!listen && addr_file && *addr_file) {
        FILE *f = fopen(addr_file, "r");
        if (f) {
            if (fgets(written, sizeof written, f)) {
                written[strcspn(written, "\r\n")] = 0;
                listen = written;
            }
            fclose(f);
        }
        if (!listen) { /* not (yet) ready, or not running */
            fprintf(stderr, "unhealthy: no address in %s (the server writes it once ready)\n",
                    addr_file);
            return CLI_FAIL;
        }
    }
    if (!listen) listen = getenv("BARLOWD_LISTEN");
    if (!listen || !*listen) listen = "127.0.0.1:8080";
    long timeout = cli_flag_long(argc, argv, "--timeout", 5, 1, 3600);
    if (timeout < 0) return CLI_BAD_INPUT;
    char host[256];
    int port;
    if (serve_parse_listen(listen, host, sizeof host, &port)) {
        fprintf(stderr, "error: --listen %s: expected HOST:PORT\n", listen);
        return CLI_BAD_INPUT;
    }
    /* a wildcard listen address is probed on loopback */
    if (!strcmp(host, "0.0.0.0")) strcpy(host, "127.0.0.1");
    if (!strcmp(host, "::")) strcpy(host, "::1");
    http_reply r;
    char err[256];
    if (http_request(host, port, "GET", "/healthz", NULL, NULL, 0, (double)timeout, &r, err,
                     sizeof err)) {
        fprintf(stderr, "unhealthy: %s\n", err);
        return CLI_FAIL;
    }
    int ok = r.status == 200;
    if (!ok) fprintf(stderr, "unhealthy: /healthz answered %d\n", r.status);
    http_reply_free(&r);
    return ok ? CLI_OK : CLI_FAIL;
}
