/* cli_util.c — flag parsing and float32 file I/O for barlowd's subcommands. */
#include "cli_util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *cli_flag(int argc, char **argv, const char *name) {
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return NULL;
}

int cli_check_flags(int argc, char **argv, const char *const *known) {
    for (int i = 0; i < argc; i += 2) { /* flag, value */
        int ok = 0;
        for (const char *const *k = known; *k; k++) ok |= !strcmp(argv[i], *k);
        if (!ok) {
            fprintf(stderr, "error: unknown argument '%s'\n", argv[i]);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: flag %s needs a value\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

long cli_flag_long(int argc, char **argv, const char *name, long dflt, long lo, long hi) {
    return cli_parse_long(name, cli_flag(argc, argv, name), dflt, lo, hi);
}

int cli_parse(int argc, char **argv, const cli_opt *opts, int n_opts, const char **values,
              const char **pos, int max_pos, int *n_pos) {
    assert(argc >= 0 && n_opts >= 0 && max_pos >= 0);
    for (int k = 0; k < n_opts; k++) values[k] = NULL;
    *n_pos = 0;
    int flags_done = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && !strcmp(a, "--")) {
            flags_done = 1;
            continue;
        }
        if (flags_done || a[0] != '-' || a[1] == 0) { /* "-" alone is a positional argument */
            if (*n_pos == max_pos) {
                fprintf(stderr, "error: unexpected argument '%s'\n", a);
                return -1;
            }
            pos[(*n_pos)++] = a;
            continue;
        }
        int k = 0;
        while (k < n_opts && strcmp(a, opts[k].name)) k++;
        if (k == n_opts) {
            fprintf(stderr, "error: unknown argument '%s'\n", a);
            return -1;
        }
        if (opts[k].is_switch) {
            values[k] = "1";
        } else if (i + 1 >= argc) {
            fprintf(stderr, "error: flag %s needs a value\n", a);
            return -1;
        } else {
            values[k] = argv[++i];
        }
    }
    return 0;
}

long cli_parse_long(const char *name, const char *v, long dflt, long lo, long hi) {
    if (!v) return dflt;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "error: %s must be an integer in [%ld, %ld], got '%s'\n", name, lo, hi, v);
        return -1;
    }
    return x;
}

int cli_read_bytes(const char *path, const char *what, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: %s file %s: %s\n", what, path, strerror(errno));
        return -1;
    }
    uint8_t *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) goto io_fail;
    buf = malloc(size ? (size_t)size : 1);
    if (!buf) {
        fprintf(stderr, "error: %s file %s: out of memory (%ld bytes)\n", what, path, size);
        fclose(f);
        return -1;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) goto io_fail;
    fclose(f);
    *data = buf;
    *len = (size_t)size;
    return 0;
io_fail:
    fprintf(stderr, "error: %s file %s: read failed: %s\n", what, path, strerror(errno));
    free(buf);
    fclose(f);
    return -1;
}

int cli_read_floats(const char *path, const char *what, float **data, size_t *count) {
    *data = NULL;
    *count = 0;
    uint8_t *bytes;
    size_t len;
    if (cli_read_bytes(path, what, &bytes, &len)) return -1;
    if (len == 0 || len % 4) {
        fprintf(stderr, "error: %s file %s: size %zu is not a positive multiple of 4 bytes\n",
                what, path, len);
        free(bytes);
        return -1;
    }
    float *buf = (float *)(void *)bytes; /* malloc's alignment suits float */
    size_t n = len / 4;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(buf[i])) {
            fprintf(stderr, "error: %s file %s: value %zu is not finite\n", what, path, i);
            free(buf);
            return -1;
        }
    }
    *data = buf;
    *count = n;
    return 0;
}

int cli_write_floats(const char *path, const float *data, size_t count) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t w = fwrite(data, sizeof(float), count, f);
    int rc = fclose(f);
    if (w != count || rc != 0) {
        fprintf(stderr, "error: writing %s failed: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int cli_write_atomic(const char *path, const void *bytes, size_t len) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    const char *p = bytes;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            unlink(tmp);
            errno = e;
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    int bad = fsync(fd) != 0, e = errno;
    if (close(fd) != 0 && !bad) bad = 1, e = errno;
    if (!bad && rename(tmp, path) != 0) bad = 1, e = errno;
    if (bad) {
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
