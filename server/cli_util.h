/* cli_util.h — small helpers shared by barlowd's subcommands: flag parsing and whole-file I/O of
 * little-endian float32 arrays. */
#ifndef CLI_UTIL_H
#define CLI_UTIL_H

#include <stddef.h>
#include <stdint.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "barlowd's .bin files are little-endian float32; this port assumes a little-endian host"
#endif

/* Seconds on the monotonic clock (for durations). */
double cli_now(void);

/* Exit codes of subcommands. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_BAD_INPUT = 2 };

/* Looks for `--name VALUE` in argv; returns VALUE or NULL. Marks nothing; see cli_check_flags. */
const char *cli_flag(int argc, char **argv, const char *name);
/* Fails (returns -1, prints to stderr) if argv has a flag not in `known` (NULL-terminated) or a
 * flag without a value. */
int cli_check_flags(int argc, char **argv, const char *const *known);
/* Parses a positive integer flag with a default; -1 on a malformed value. */
long cli_flag_long(int argc, char **argv, const char *name, long dflt, long lo, long hi);

/* One flag of a command that also takes positional arguments (cli_parse). */
typedef struct cli_opt {
    const char *name; /* "--batch" */
    int is_switch;    /* 1: takes no value (--label-from-dir); given, its value is "1" */
} cli_opt;
/* Splits argv into flags and positional arguments: values[i] is opts[i]'s value (NULL when not
 * given), pos[0..*n_pos) the other arguments in order (pointers into argv, at most max_pos).
 * "--" ends the flags. Fails (returns -1, prints to stderr) on an unknown flag, a flag without
 * its value or more than max_pos positional arguments. */
int cli_parse(int argc, char **argv, const cli_opt *opts, int n_opts, const char **values,
              const char **pos, int max_pos, int *n_pos);
/* Parses an integer flag's value (NULL: dflt) in [lo, hi]; -1 with a message when malformed. */
long cli_parse_long(const char *name, const char *value, long dflt, long lo, long hi);

/* Reads a whole file of float32 values. On success *data is malloc'd and *count set; on failure
 * prints why (prefixed with `what`) and returns -1. Refuses sizes not a multiple of 4 and
 * non-finite values. */
int cli_read_floats(const char *path, const char *what, float **data, size_t *count);
/* Reads a whole file (*data malloc'd). On failure prints why (prefixed with `what`) and returns
 * -1. */
int cli_read_bytes(const char *path, const char *what, uint8_t **data, size_t *len);

/* Writes bytes to path atomically (path.tmp, fsync, rename): the file is whole or untouched.
 * -1 with errno set on failure (nothing printed). */
int cli_write_atomic(const char *path, const void *bytes, size_t len);

/* Writes `count` floats; -1 with a message on failure. */
int cli_write_floats(const char *path, const float *data, size_t count);

#endif
