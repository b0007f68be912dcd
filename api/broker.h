// broker.h — wakes SSE streams when something new was written for a job.
//
// The database is the event queue (events carry per-job sequence numbers and
// replay from any point), so the broker only carries "look again": a
// generation counter bumped on every publish. A stream reads the counter,
// queries the database, and then waits for the counter to move, so an event
// committed between its query and its wait is never missed.
#ifndef BROKER_H
#define BROKER_H

typedef struct Broker Broker;

// NULL on failure. Free with broker_free once no stream uses it.
Broker *broker_create(void);
void broker_free(Broker *b);
// The current generation.
unsigned long long broker_generation(Broker *b);
// Bumps the generation and wakes every waiter. Any thread.
void broker_publish(Broker *b);
// Blocks until the generation differs from seen, shutdown, or timeout_ms.
// Returns 1 when woken by a publish, 0 on timeout, -1 after shutdown.
int broker_wait(Broker *b, unsigned long long seen, int timeout_ms);
// Ends every current and future wait with -1 (daemon shutdown).
void broker_shutdown(Broker *b);
int broker_is_shutdown(Broker *b);

#endif
