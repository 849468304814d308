/* probe_include.c — includes PROBE_HEADER with one library's include roots and nothing else; the
 * dependency test expects this to fail to compile for every edge docs/DESIGN.md forbids. */
#include PROBE_HEADER

int probe_include(void);
int probe_include(void) { return 0; }
