/* proxy_thread.c — calls made for SCHED_IDLE threads at normal priority (see proxy_thread.h). */
#define _GNU_SOURCE /* syscall */
#include "proxy_thread.h"

#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct proxy_job {
    void (*fn)(void *);
    void *arg;
    int done;
};

static void *proxy_main(void *arg) {
    proxy_thread *p = arg;
    /* like the fresh-upload embedder: below request threads, far above SCHED_IDLE */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 5);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->job && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
        if (!p->job) break; /* stopping, nothing left */
        proxy_job *j = p->job;
        p->job = NULL;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        pthread_mutex_lock(&p->mu);
        j->done = 1;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int proxy_start(proxy_thread *p) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_mutex_init(&p->callers, NULL);
    if (pthread_create(&p->thread, NULL, proxy_main, p)) return -1;
    p->running = 1;
    return 0;
}

void proxy_call(proxy_thread *p, void (*fn)(void *), void *arg) {
    if (!p->running) {
        fn(arg);
        return;
    }
    proxy_job j = {fn, arg, 0};
    pthread_mutex_lock(&p->callers);
    pthread_mutex_lock(&p->mu);
    if (p->stop) { /* the proxy has gone (or is going): make the call here */
        pthread_mutex_unlock(&p->mu);
        pthread_mutex_unlock(&p->callers);
        fn(arg);
        return;
    }
    p->job = &j;
    pthread_cond_broadcast(&p->cv);
    while (!j.done) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->callers);
}

void proxy_stop(proxy_thread *p) {
    if (p->running) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
        p->running = 0;
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->callers);
}
