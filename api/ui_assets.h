/* ui_assets.h — the dashboard's files (api/ui/), compiled into the binary by api/ui/embed.cmake
 * so that the page works offline with nothing beside the executable. */
#ifndef UI_ASSETS_H
#define UI_ASSETS_H

#include <stddef.h>

typedef struct ui_asset {
    const char *name;         /* "index.html", "app.js", ... (NULL ends the table) */
    const char *media_type;   /* its Content-Type */
    const unsigned char *data;
    size_t len;
} ui_asset;

extern const ui_asset ui_assets[];

#endif
