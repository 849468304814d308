/* test_util.c — fixture reading, tensor comparison and layout conversion for the tests. */
#include "test_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eng_rng.h"
#include <stdio.h>
#include <jpeglib.h>

void tu_write_idx(const char *path, int n, int varied) {
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL, "cannot write %s", path);
    unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, (unsigned char)(n >> 8), (unsigned char)n,
                             0, 0, 0, 12, 0, 0, 0, 12};
    fwrite(hdr, 1, 16, f);
    for (int i = 0; i < n * 144; i++)
        fputc((i * 37 + i / 144 * 11 + (varied ? (i * i) % 13 : 0)) & 255, f);
    fclose(f);
}

int tu_run(char *const argv[], char *msg, size_t msglen) {
    char errpath[] = "/tmp/barlowd-test-XXXXXX";
    int fd = mkstemp(errpath);
    cr_assert(fd >= 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fd, 2);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, msg, msglen - 1);
    msg[n > 0 ? n : 0] = 0;
    close(fd);
    unlink(errpath);
    cr_assert(WIFEXITED(status), "%s did not exit normally (signal %d)", argv[0],
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return WEXITSTATUS(status);
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "cannot open fixture %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert(buf != NULL);
    cr_assert(fread(buf, 1, (size_t)n, f) == (size_t)n, "short read of %s", path);
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

float *tu_fixture_floats(const char *dir, const char *name, size_t *count) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", BARLOWD_FIXTURES, dir, name);
    size_t len;
    char *buf = tu_read_file(path, &len);
    cr_assert(len % 4 == 0, "%s: size %zu is not a multiple of 4", path, len);
    *count = len / 4;
    return (float *)buf;
}

char *tu_fixture_text(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", BARLOWD_FIXTURES, dir, name);
    size_t len;
    return tu_read_file(path, &len);
}

double tu_rel_l2(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

double tu_check_tensor(const char *label, const float *got, const float *want, size_t n) {
    double e = tu_rel_l2(got, want, n);
    if (e > 1e-4) {
        fprintf(stderr, "%s: relative L2 error %.3g over %zu values\n", label, e, n);
        int shown = 0;
        for (size_t i = 0; i < n && shown < 5; i++) {
            if (fabs((double)got[i] - want[i]) > 1e-4 * (fabs(want[i]) + 1e-3)) {
                fprintf(stderr, "  [%zu] got %.7g want %.7g\n", i, got[i], want[i]);
                shown++;
            }
        }
    }
    return e;
}

size_t tu_numel(const eng_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->md.ndims; i++) n *= (size_t)t->md.dims[i];
    return n;
}

static void plain_md_of(const eng_tensor *t, dnnl_memory_desc_t *md) {
    eng_err err = {0};
    cr_assert(eng_md_plain(md, t->md.ndims, t->md.dims, &err) == 0, "%s", err.msg);
}

float *tu_to_plain(eng_ctx *ctx, eng_tensor *t) {
    eng_err err = {0};
    dnnl_memory_desc_t md;
    plain_md_of(t, &md);
    float *out = malloc(dnnl_memory_desc_get_size(&md) + 64);
    cr_assert(out != NULL);
    eng_tensor p;
    dnnl_primitive_t r = NULL;
    cr_assert(eng_tensor_wrap(&p, ctx, &md, out, &err) == 0, "%s", err.msg);
    cr_assert(eng_reorder_make(ctx, &t->md, &md, &r, &err) == 0, "%s", err.msg);
    cr_assert(eng_reorder_run(ctx, r, t, &p, &err) == 0, "%s", err.msg);
    dnnl_stream_wait(ctx->stream);
    if (r) dnnl_primitive_destroy(r);
    eng_tensor_free(&p);
    return out;
}

void tu_from_plain(eng_ctx *ctx, eng_tensor *t, const float *plain) {
    eng_err err = {0};
    dnnl_memory_desc_t md;
    plain_md_of(t, &md);
    eng_tensor p;
    dnnl_primitive_t r = NULL;
    cr_assert(eng_tensor_wrap(&p, ctx, &md, (float *)plain, &err) == 0, "%s", err.msg);
    cr_assert(eng_reorder_make(ctx, &md, &t->md, &r, &err) == 0, "%s", err.msg);
    cr_assert(eng_reorder_run(ctx, r, &p, t, &err) == 0, "%s", err.msg);
    dnnl_stream_wait(ctx->stream);
    if (r) dnnl_primitive_destroy(r);
    eng_tensor_free(&p);
}

void tu_randn(float *x, size_t n, unsigned long long seed, double scale) {
    eng_rng r;
    eng_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * eng_rng_normal(&r));
}

void tu_coverage(const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "coverage: %s\n", text);
}

int tu_cpu_has(const char *flag) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    cr_assert(f != NULL, "cannot read /proc/cpuinfo");
    char line[8192];
    int found = 0;
    size_t n = strlen(flag);
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5)) continue;
        for (char *p = strchr(line, ':'); p && *p; p++) {
            if ((p[-1] == ' ' || p[-1] == ':') && !strncmp(p, flag, n) &&
                (p[n] == ' ' || p[n] == '\n' || p[n] == 0)) {
                found = 1;
                break;
            }
        }
        break; /* every core lists the same flags */
    }
    fclose(f);
    return found;
}

/* Encodes 8-bit pixels (1 or 3 components, or 4 as CMYK) as a baseline JPEG; an optional APP1
 * payload is written right after the JFIF header. Caller frees the result. */
uint8_t *tu_encode_jpeg(const uint8_t *px, int w, int h, int comps, int quality,
                          const uint8_t *app1, size_t app1_len, size_t *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long size = 0;
    jpeg_mem_dest(&c, &buf, &size);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    if (app1) jpeg_write_marker(&c, JPEG_APP0 + 1, app1, (unsigned)app1_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)px + (size_t)c.next_scanline * w * comps;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *len = size;
    return buf;
}
