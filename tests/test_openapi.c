/* test_openapi.c — api/openapi.yaml is the API's contract: it must parse as YAML (libyaml), it
 * must describe exactly the routes of the route table (method and path, parameters' names
 * aside), and every route it describes must answer on the real server (anything but the
 * router's own "no such route" 404 or a 405). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "api.h"
#include "api_internal.h"
#include "server_util.h"

TestSuite(openapi, .init = make_dir, .fini = remove_dir, .timeout = 120);

#define MAX_ROUTES 64

/* "METHOD /path" with every {name} turned into {} (the table and the spec may name them
 * differently). */
static void normalise(const char *method, const char *path, char *out, size_t n) {
    size_t o = 0;
    for (const char *m = method; *m && o + 1 < n; m++)
        out[o++] = (char)(*m >= 'a' && *m <= 'z' ? *m - 32 : *m);
    if (o + 1 < n) out[o++] = ' ';
    for (const char *p = path; *p && o + 2 < n; p++) {
        out[o++] = *p;
        if (*p == '{') {
            while (*p && *p != '}') p++;
            out[o++] = '}';
            if (!*p) break;
        }
    }
    out[o] = 0;
}

static const char *scalar(yaml_document_t *d, yaml_node_t *n) {
    (void)d;
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The mapping's value under key, or NULL. */
static yaml_node_t *get(yaml_document_t *d, yaml_node_t *map, const char *key) {
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *k = scalar(d, yaml_document_get_node(d, p->key));
        if (k && !strcmp(k, key)) return yaml_document_get_node(d, p->value);
    }
    return NULL;
}

static const char *const methods[] = {"get", "post", "put", "delete", "patch", NULL};

/* The spec's routes (normalised) and, for requests, their raw paths. */
static int load_spec(char labels[][96], char paths[][96], char verbs[][8]) {
    FILE *f = fopen(BARLOWD_SOURCE "/api/openapi.yaml", "rb");
    cr_assert(f, "api/openapi.yaml is missing");
    yaml_parser_t parser;
    yaml_document_t doc;
    cr_assert(yaml_parser_initialize(&parser));
    yaml_parser_set_input_file(&parser, f);
    int ok = yaml_parser_load(&parser, &doc);
    cr_assert(ok && parser.error == YAML_NO_ERROR, "api/openapi.yaml does not parse: %s at line %zu",
              parser.problem ? parser.problem : "?", parser.problem_mark.line + 1);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    cr_assert(root, "api/openapi.yaml is empty");
    const char *version = scalar(&doc, get(&doc, root, "openapi"));
    cr_expect(version && !strncmp(version, "3.", 2), "an OpenAPI 3 document");
    yaml_node_t *pathmap = get(&doc, root, "paths");
    cr_assert(pathmap && pathmap->type == YAML_MAPPING_NODE, "no paths mapping");
    int n = 0;
    for (yaml_node_pair_t *p = pathmap->data.mapping.pairs.start;
         p < pathmap->data.mapping.pairs.top; p++) {
        const char *path = scalar(&doc, yaml_document_get_node(&doc, p->key));
        yaml_node_t *ops = yaml_document_get_node(&doc, p->value);
        cr_assert(path && ops && ops->type == YAML_MAPPING_NODE, "path %s", path ? path : "?");
        for (int m = 0; methods[m]; m++) {
            yaml_node_t *op = get(&doc, ops, methods[m]);
            if (!op) continue;
            cr_assert(n < MAX_ROUTES);
            cr_expect(get(&doc, op, "responses") != NULL, "%s %s has no responses", methods[m],
                      path);
            normalise(methods[m], path, labels[n], 96);
            snprintf(paths[n], 96, "%s", path);
            snprintf(verbs[n], 8, "%s", methods[m]);
            for (char *c = verbs[n]; *c; c++) *c = (char)(*c - 32);
            n++;
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return n;
}

static int find(char labels[][96], int n, const char *label) {
    for (int i = 0; i < n; i++)
        if (!strcmp(labels[i], label)) return i;
    return -1;
}

Test(openapi, the_spec_parses_and_describes_every_route_and_every_described_route_answers) {
    static char spec[MAX_ROUTES][96], paths[MAX_ROUTES][96], verbs[MAX_ROUTES][8];
    int ns = load_spec(spec, paths, verbs);
    static char table[MAX_ROUTES][96];
    int nt = API_ROUTES - 3; /* the table's routes; the last three slots are pseudo-labels */
    cr_assert(nt <= MAX_ROUTES);
    for (int i = 0; i < nt; i++) {
        char method[16], path[80];
        cr_assert(sscanf(api_route_label(i), "%15s %79s", method, path) == 2);
        normalise(method, path, table[i], 96);
        cr_expect(find(spec, ns, table[i]) >= 0, "the server answers %s; api/openapi.yaml does "
                  "not describe it", api_route_label(i));
    }
    for (int i = 0; i < ns; i++)
        cr_expect(find(table, nt, spec[i]) >= 0, "api/openapi.yaml describes %s; the route "
                  "table has no such route", spec[i]);

    /* every described route answers on the real server */
    const char *flags[] = {"--train", "no", NULL};
    server s = start(flags);
    for (int i = 0; i < ns; i++) {
        char path[128];
        size_t o = 0;
        for (const char *p = paths[i]; *p && o + 2 < sizeof path; p++) {
            if (*p == '{') {
                path[o++] = '1';
                while (*p && *p != '}') p++;
                if (!*p) break;
            } else {
                path[o++] = *p;
            }
        }
        path[o] = 0;
        const char *body = strcmp(verbs[i], "GET") && strcmp(verbs[i], "DELETE") ? "{}" : NULL;
        reply r = req(&s, verbs[i], path, body ? "Content-Type: application/json\r\n" : NULL,
                      body, body ? 2 : 0);
        cr_expect(r.status != 0 && r.status != 405, "%s %s: %d", verbs[i], path, r.status);
        cr_expect(!(r.status == 404 && r.raw.body && strstr(r.raw.body, "no such route")),
                  "%s %s: the router has no such route", verbs[i], path);
        reply_free(&r);
    }
    stop(&s);
}
