/* probe_link.c — calls PROBE_SYMBOL, declared here rather than through its library's header (a
 * system header compiles anywhere), linked against one library and what it links: the
 * dependency test expects the link to fail for every library a box must not link. Never run. */
void PROBE_SYMBOL(void);

int main(void) {
    PROBE_SYMBOL();
    return 0;
}
