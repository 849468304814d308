/* upload_files.h — what `barlowd upload` sends: the image files under the paths it was given,
 * in a deterministic order, each with the directory it came from. */
#ifndef UPLOAD_FILES_H
#define UPLOAD_FILES_H

#include <stddef.h>

typedef struct upload_file {
    char *path;        /* as found (the argument, then the names below it); owned */
    char *dir;         /* the parent directory's path, for batching by directory; owned */
    const char *label; /* the parent directory's name (ImageFolder's class): points into dir */
} upload_file;

typedef struct upload_list {
    upload_file *files;
    int n, cap;
} upload_list;

/* Appends the files of path to list: a directory is walked recursively in byte order of the
 * names (symbolic links to directories are not followed) for .png .jpg .jpeg .pgm files (any
 * case); a file named directly is taken whatever its name. On failure returns -1 with why in
 * err (a path that does not exist, an unreadable directory, out of memory); list then holds
 * what was found before. */
int upload_files_add(upload_list *list, const char *path, char *err, size_t err_len);
void upload_files_free(upload_list *list);

#endif
