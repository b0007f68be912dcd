// broker.c — generation counter + condition variable (see broker.h).
#include "broker.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct Broker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long long gen;
    int shutdown;
};

Broker *broker_create(void) {
    Broker *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) goto fail_b;
    // Monotonic deadlines so a wall-clock jump cannot stall heartbeats.
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (pthread_cond_init(&b->cv, &attr) != 0) goto fail_attr;
    if (pthread_mutex_init(&b->mu, NULL) != 0) goto fail_cv;
    pthread_condattr_destroy(&attr);
    return b;
fail_cv:
    pthread_cond_destroy(&b->cv);
fail_attr:
    pthread_condattr_destroy(&attr);
fail_b:
    free(b);
    return NULL;
}

void broker_free(Broker *b) {
    if (!b) return;
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

unsigned long long broker_generation(Broker *b) {
    pthread_mutex_lock(&b->mu);
    unsigned long long g = b->gen;
    pthread_mutex_unlock(&b->mu);
    return g;
}

void broker_publish(Broker *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->gen++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

int broker_wait(Broker *b, unsigned long long seen, int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->shutdown) {
            rc = -1;
            break;
        }
        if (b->gen != seen) {
            rc = 1;
            break;
        }
        if (pthread_cond_timedwait(&b->cv, &b->mu, &deadline) == ETIMEDOUT) {
            rc = b->shutdown ? -1 : (b->gen != seen);
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void broker_shutdown(Broker *b) {
    pthread_mutex_lock(&b->mu);
    b->shutdown = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

int broker_is_shutdown(Broker *b) {
    pthread_mutex_lock(&b->mu);
    int s = b->shutdown;
    pthread_mutex_unlock(&b->mu);
    return s;
}
