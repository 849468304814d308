/* svc_lock.h — the service's locks, which know who holds them, so that a function that must be
 * called with a lock held can assert it (assert(svc_mutex_held(&s->version_mu))).
 *
 * A mutex records its owner; a read-write lock its writer and its number of readers. The
 * bookkeeping is two atomics per lock operation, and the asserts compile away under NDEBUG. */
#ifndef SVC_LOCK_H
#define SVC_LOCK_H

#include <pthread.h>
#include <stdatomic.h>

typedef struct svc_mutex {
    pthread_mutex_t mu;
    atomic_ulong owner; /* the holder's pthread_self(), 0 when free */
} svc_mutex;

void svc_mutex_init(svc_mutex *m);
void svc_mutex_destroy(svc_mutex *m);
void svc_mutex_lock(svc_mutex *m);
void svc_mutex_unlock(svc_mutex *m); /* asserts the caller holds it */
int svc_mutex_held(svc_mutex *m);    /* 1 when the calling thread holds m */

typedef struct svc_rwlock {
    pthread_rwlock_t rw;
    atomic_ulong writer; /* the writer's pthread_self(), 0 when none */
    atomic_int readers;  /* threads holding it for reading */
} svc_rwlock;

void svc_rwlock_init(svc_rwlock *l);
void svc_rwlock_destroy(svc_rwlock *l);
void svc_rwlock_rdlock(svc_rwlock *l);
void svc_rwlock_wrlock(svc_rwlock *l);
void svc_rwlock_unlock(svc_rwlock *l);
int svc_rwlock_write_held(svc_rwlock *l); /* 1 when the calling thread holds it for writing */
/* 1 when the calling thread holds it for writing or some thread holds it for reading (which
 * reader is not recorded: a read lock is shared). */
int svc_rwlock_held(svc_rwlock *l);

#endif
