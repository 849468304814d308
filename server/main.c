/* main.c — the barlowd binary: dispatches to subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} commands[] = {
    {"serve", cmd_serve,
     "serve [--listen 0.0.0.0:8080] [--db ./data/barlowd.db] [--model small] [--api-key KEY] ...\n"
     "        the HTTP server: stores uploads, trains continually, publishes model versions,\n"
     "        answers embeddings and nearest-neighbour searches (barlowd serve --help: all flags)"},
    {"health", cmd_health,
     "health [--listen HOST:PORT] [--timeout 5]\n"
     "        exit 0 when the server on HOST:PORT (default $BARLOWD_LISTEN or 127.0.0.1:8080)\n"
     "        answers /healthz with 200 (the Docker HEALTHCHECK)"},
    {"upload", cmd_upload,
     "upload DIR|FILE... [--server http://127.0.0.1:8080] [--api-key KEY] [--label-from-dir]\n"
     "       [--meta JSON] [--batch 32] [--jobs 4]\n"
     "        send PNG, JPEG and PGM files (directories walked recursively) to POST /train in\n"
     "        batches over --jobs connections, skipping those the server holds (so a rerun\n"
     "        resumes); --label-from-dir: the parent directory's name becomes meta.label.\n"
     "        Exit 0 when every file was sent or already there, 1 when any was refused or failed"},
    {"search", cmd_search,
     "search IMAGE [--server http://127.0.0.1:8080] [--k 10] [--filter JSON] [--api-key KEY]\n"
     "        the stored images nearest to IMAGE, one per line: id, score, label (meta.label)"},
    {"backup", cmd_backup,
     "backup --db PATH --out FILE\n"
     "        a consistent snapshot of the database (also while a server runs on it)"},
    {"restore", cmd_restore,
     "restore FILE --db PATH\n"
     "        check a snapshot and put it in place for the next start (refused while a server\n"
     "        runs on PATH; the old database is kept as PATH.before-restore)"},
    {"step", cmd_step,
     "step --config C.json --params P.bin --views V.bin --out O.bin [--rep R.bin] [--stats S.bin]\n"
     "        one forward+backward in training mode (no optimiser step): writes the loss and every\n"
     "        parameter gradient (canonical order, float32 LE); optionally the view-A representation\n"
     "        and the running BN statistics after the step. Under mpirun -np R the ranks share\n"
     "        the batch (synchronised batch norms, c and gradients summed); rank 0 writes"},
    {"train", cmd_train,
     "train --data DIR|FILE.idx [--model small] [--minutes M | --seconds S | --steps N]\n"
     "      [--batch 256]\n"
     "      [--checkpoint out.bin] [--resume yes] [--seed S] [--warmup W] [--save-every SEC]\n"
     "      [--recipe FILE.json]\n"
     "        train on a directory of images or an IDX file, with a progress line; the\n"
     "        checkpoint is written atomically every SEC seconds and at the end (or on Ctrl-C).\n"
     "        Under mpirun -np R: data-parallel over the R ranks (each its shard of every batch;\n"
     "        each needs its own copy of the data); rank 0 writes the checkpoint"},
    {"train-rank", cmd_train_rank,
     "train-rank --feed SOCKET [--connect-timeout 60]\n"
     "        one rank of the training job of `serve --train-ranks` (serve starts it with\n"
     "        mpirun; rank 0 connects to SOCKET)"},
    {"embed", cmd_embed,
     "embed --checkpoint C.bin --data DIR|FILE.idx --out vectors.f32 [--batch 256]\n"
     "        the representation of every image (whole image resized, no augmentation),\n"
     "        [N, D] float32 little-endian in the data's order"},
    {"export", cmd_export,
     "export --db PATH [--version N] --format onnx|safetensors --out FILE\n"
     "        a stored model version for other runtimes (the serving one by default): ONNX (the\n"
     "        encoder, its preprocessing in metadata_props) or safetensors (PyTorch's names)"},
    {"config", cmd_config,
     "config [--model tiny|small|resnet18|FILE.json]\n"
     "        print the model config as canonical JSON and its parameter table on stderr"},
    {"bench-step", cmd_bench_step,
     "bench-step [--model small] [--batch 256] [--steps 10] [--warmup 3] [--threads N]\n"
     "           [--synced yes]\n"
     "        time full training steps (2 views, forward, loss, backward, LARS) on random inputs;\n"
     "        --synced yes: with the data-parallel (synchronised) batch norms, on one rank"},
    {"bench-fma", cmd_bench_fma,
     "bench-fma [--threads N] [--ms 1000]\n"
     "        the machine's FMA peak: 12 independent vector FMA chains per thread, the widest\n"
     "        kernel the CPU and the ISA cap allow (AVX-512 or AVX2), GFLOP/s over all threads"},
    {"bench-comm", cmd_bench_comm,
     "bench-comm [--max-mb 16] [--repeat 20]\n"
     "        under mpirun -np R: the time of a float sum over the ranks (reduce to rank 0, then\n"
     "        broadcast: what training sums c and the gradients with) from 8 bytes to --max-mb"},
    {"bench-search", cmd_bench_search,
     "bench-search [--n 100000] [--dim 512] [--queries 200] [--k 10] [--batch 1000] [--kernel K]\n"
     "             [--kernel8 K] [--rerank F] [--dump-prefix P] [--data random|clusters]\n"
     "             [--clusters 1000] [--sigma 1000] [--ann 1 [--m 16] [--ef-construction 100]\n"
     "             [--ef 16,32,64,128,256]] [--skip-int8 1]\n"
     "        exact top-k latency and batch throughput on random vectors, and the int8 first pass\n"
     "        with exact re-ranking (recall@k), beside the measured memory-bandwidth bound; with\n"
     "        --ann 1 the HNSW graph too (build time, bytes, RSS, latency and recall per ef, and\n"
     "        filtered queries: exact scan vs graph walk per filter share);\n"
     "        --sigma is in thousandths of a cluster centre's per-component spread"},
    {"bench-filter", cmd_bench_filter,
     "bench-filter [--n 100000] [--dim 256] [--queries 200] [--k 10]\n"
     "        filtered exact search (a real store's metadata index + the index scan) beside the\n"
     "        unfiltered scan, with filters matching 50%, 10% and 1% of the images"},
    {"bench-ingest", cmd_bench_ingest,
     "bench-ingest [--db PATH] [--writers 1,8,32] [--images N] [--sync full|normal]\n"
     "        images saved per second into a SQLite store by concurrent writers"},
};

/* glibc reads its malloc tunables once, at start-up. The long-running commands re-execute
 * themselves once with glibc.malloc.hugetlb=1, which puts malloc's own heaps (every small buffer:
 * decoded images, JSON, small tensors) on transparent huge pages as eng_alloc does for large
 * ones. On our machines the host scans page tables every 500 ms (DAMON) and inference on 4 KiB
 * pages stalls for 10-50 ms while it does; docs/BENCHMARKS.md has the figures. A user who sets
 * GLIBC_TUNABLES (to anything, even empty) keeps exactly that. If exec fails we go on as we are. */
static void reexec_with_huge_page_malloc(char **argv) {
    if (getenv("GLIBC_TUNABLES")) return;
    /* started through the dynamic loader (ld.so barlowd ...): /proc/self/exe is the loader,
     * which would not know what to run */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return;
    self[n] = 0;
    const char *base = strrchr(self, '/') ? strrchr(self, '/') + 1 : self;
    if (!strncmp(base, "ld-", 3) || strstr(base, "ld.so")) return;
    if (setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1", 1)) return;
    execv("/proc/self/exe", argv);
    unsetenv("GLIBC_TUNABLES");
}

static void usage(FILE *out) {
    fprintf(out, "barlowd — an embedding server that keeps learning (Barlow Twins on oneDNN)\n\n"
                 "usage: barlowd <command> [flags]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %s\n", commands[i].usage);
    fprintf(out, "  help\n        this list\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "-h")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "serve") || !strcmp(argv[1], "train")) reexec_with_huge_page_malloc(argv);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
