/* svc_lock.c — mutexes and read-write locks that record their holders (see svc_lock.h). */
#include "svc_lock.h"

#include <assert.h>

static unsigned long self(void) { return (unsigned long)pthread_self(); }

void svc_mutex_init(svc_mutex *m) {
    pthread_mutex_init(&m->mu, NULL);
    atomic_init(&m->owner, 0);
}

void svc_mutex_destroy(svc_mutex *m) { pthread_mutex_destroy(&m->mu); }

void svc_mutex_lock(svc_mutex *m) {
    pthread_mutex_lock(&m->mu);
    atomic_store_explicit(&m->owner, self(), memory_order_relaxed);
}

void svc_mutex_unlock(svc_mutex *m) {
    assert(svc_mutex_held(m));
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
    pthread_mutex_unlock(&m->mu);
}

int svc_mutex_held(svc_mutex *m) {
    return atomic_load_explicit(&m->owner, memory_order_relaxed) == self();
}

void svc_rwlock_init(svc_rwlock *l) {
    pthread_rwlock_init(&l->rw, NULL);
    atomic_init(&l->writer, 0);
    atomic_init(&l->readers, 0);
}

void svc_rwlock_destroy(svc_rwlock *l) { pthread_rwlock_destroy(&l->rw); }

void svc_rwlock_rdlock(svc_rwlock *l) {
    pthread_rwlock_rdlock(&l->rw);
    atomic_fetch_add_explicit(&l->readers, 1, memory_order_relaxed);
}

void svc_rwlock_wrlock(svc_rwlock *l) {
    pthread_rwlock_wrlock(&l->rw);
    atomic_store_explicit(&l->writer, self(), memory_order_relaxed);
}

void svc_rwlock_unlock(svc_rwlock *l) {
    if (svc_rwlock_write_held(l)) {
        atomic_store_explicit(&l->writer, 0, memory_order_relaxed);
    } else {
        int was = atomic_fetch_sub_explicit(&l->readers, 1, memory_order_relaxed);
        assert(was > 0);
        (void)was;
    }
    pthread_rwlock_unlock(&l->rw);
}

int svc_rwlock_write_held(svc_rwlock *l) {
    return atomic_load_explicit(&l->writer, memory_order_relaxed) == self();
}

int svc_rwlock_held(svc_rwlock *l) {
    return svc_rwlock_write_held(l) || atomic_load_explicit(&l->readers, memory_order_relaxed) > 0;
}
