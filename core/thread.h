/* thread: starting a daemon's worker thread the one way: every signal blocked in it. */
#pragma once

#include <pthread.h>

/*
 * pthread_create() with every signal blocked in the new thread (it inherits the mask that
 * the caller holds for the moment), and its name set (as top -H and /proc show it; at
 * most 15 characters). A worker never takes a signal: the stop and reload signals reach
 * the event loop (daemon_signals), and no signal frame, which holds the interrupted
 * code's registers, is ever written on a worker's stack. 0 or an errno value.
 */
int thread_start(pthread_t *t, void *(*fn)(void *), void *arg, const char *name);
