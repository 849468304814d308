/* proxy_thread.h — a thread of normal priority that makes calls on behalf of SCHED_IDLE threads.
 *
 * The trainer and its augmentation thread run under SCHED_IDLE so that requests always get the
 * cores first. A SCHED_IDLE thread must therefore never hold a lock that request threads also
 * take (the store's sampler and writer locks, the service's status lock): under load the
 * scheduler may leave it waiting, lock in hand, for seconds, and every request behind that lock
 * with it. Such calls go through a proxy instead: the caller hands over a function and waits;
 * the proxy (nice 5) runs it, taking whatever locks it needs, and is scheduled like any ordinary
 * thread. The only lock a background thread holds is the proxy's own handover lock, which no
 * request thread ever touches. */
#ifndef PROXY_THREAD_H
#define PROXY_THREAD_H

#include <pthread.h>

typedef struct proxy_job proxy_job;

typedef struct proxy_thread {
    pthread_t thread;
    pthread_mutex_t mu;       /* guards job, stop */
    pthread_cond_t cv;        /* a job was posted, or one finished */
    pthread_mutex_t callers;  /* one caller at a time */
    proxy_job *job;
    int stop;
    int running;
} proxy_thread;

/* Starts the proxy. Returns 0, or -1 (then proxy_call runs calls on the caller's thread). */
int proxy_start(proxy_thread *p);
/* Runs fn(arg) on the proxy and returns when it has finished (on the calling thread when the
 * proxy is not running or has been told to stop). Any number of threads may call; calls on
 * the proxy run one at a time. */
void proxy_call(proxy_thread *p, void (*fn)(void *), void *arg);
/* Stops and joins the proxy (after its last call). */
void proxy_stop(proxy_thread *p);

#endif
