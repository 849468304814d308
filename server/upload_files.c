/* upload_files.c — finds the image files `barlowd upload` sends; see upload_files.h. */
#include "upload_files.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* The extensions (compared without case) that mark an image in a walked directory. */
static const char *const image_ext[] = {".png", ".jpg", ".jpeg", ".pgm", NULL};

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0; /* ".png" alone is a hidden file, not an image */
    for (int i = 0; image_ext[i]; i++)
        if (!strcasecmp(dot, image_ext[i])) return 1;
    return 0;
}

/* The parent directory's path of a file path ("." for a bare name) and its last component. For
 * "a/b/c.png": dir "a/b", label "b". A bare name's label is the working directory's name. */
static int parent_of(const char *path, char **dir, const char **label) {
    const char *slash = strrchr(path, '/');
    if (slash && slash != path) {
        *dir = strndup(path, (size_t)(slash - path));
    } else if (slash) {
        *dir = strdup("/");
    } else {
        char cwd[PATH_MAX];
        *dir = strdup(getcwd(cwd, sizeof cwd) ? cwd : ".");
    }
    if (!*dir) return -1;
    const char *s = strrchr(*dir, '/');
    *label = s && s[1] ? s + 1 : *dir;
    return 0;
}

static int push(upload_list *list, const char *path) {
    if (list->n == list->cap) {
        int cap = list->cap ? 2 * list->cap : 256;
        upload_file *f = realloc(list->files, (size_t)cap * sizeof *f);
        if (!f) return -1;
        list->files = f;
        list->cap = cap;
    }
    upload_file *f = &list->files[list->n];
    f->path = strdup(path);
    if (!f->path || parent_of(path, &f->dir, &f->label)) {
        free(f->path);
        return -1;
    }
    list->n++;
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks dir: its entries sorted by name, image files taken, subdirectories walked in turn. */
static int walk(upload_list *list, const char *dir, char *err, size_t err_len) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, err_len, "%s: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **p = realloc(names, cap * sizeof *p);
            if (!p) {
                rc = -1;
                break;
            }
            names = p;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc) snprintf(err, err_len, "out of memory listing %s", dir);
    if (n) qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        char *path = malloc(len);
        if (!path) {
            snprintf(err, err_len, "out of memory");
            rc = -1;
            break;
        }
        snprintf(path, len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", names[i]);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            rc = walk(list, path, err, err_len);
        } else if (is_image_name(names[i]) && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (push(list, path)) {
                snprintf(err, err_len, "out of memory");
                rc = -1;
            }
        }
        free(path);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int upload_files_add(upload_list *list, const char *path, char *err, size_t err_len) {
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) return walk(list, path, err, err_len);
    if (push(list, path)) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}

void upload_files_free(upload_list *list) {
    for (int i = 0; i < list->n; i++) {
        free(list->files[i].path);
        free(list->files[i].dir);
    }
    free(list->files);
    *list = (upload_list){0};
}
