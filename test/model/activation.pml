/*
 * activation.pml: the exactly-once rules of tpad (ARCHITECTURE.md §10) for one DevEUI,
 * as built in daemon/activation.c, with two tpads on one store, each of which can crash
 * and restart at any step, a cloud whose imports land later than queries are answered,
 * requests and answers that get lost, 409s, and an import of the device from elsewhere.
 * README.md beside this file says which C each transition stands for.
 *
 * spin -DMUTANT=n breaks one rule on purpose; test/model/check.sh shows that Spin then
 * finds a counterexample, so the checks of the real rules can fail.
 */

#ifndef MUTANT
#define MUTANT 0
#endif

mtype = { OK, CONFLICT, REFUSED };

/* Row states (enum store_state). */
#define NONE 0
#define PENDING 1
#define ISSUED 2
#define FAILED 3
#define FOREIGN 4

/* Who imported the device into the cloud. */
#define NOBODY 0
#define OURS 1
#define THEIRS_SAME 2  /* elsewhere, with our very record (the same key) */
#define THEIRS_OTHER 3 /* elsewhere, with another record */

#define NDAEMONS 2
#ifndef MAXCRASH
#define MAXCRASH 1 /* per daemon */
#endif
#ifndef MAXLOSS
#define MAXLOSS 2  /* imports lost before they land (the cloud is reachable after) */
#endif
#ifndef MAXREFUSE
#define MAXREFUSE 2 /* imports refused (503): nothing imported */
#endif
#ifndef MAXQFAIL
#define MAXQFAIL 2  /* queries that fail (the cloud is reachable after) */
#endif

/* The store, shared by the daemons: one row, its attempt summary and the claim. */
byte row = NONE;
bool maybe = false; /* maybe_at != 0: an attempt of ours may still land or has landed */
byte lease = 0;	    /* the daemon holding the device's claim; 0: none */
bool alive[NDAEMONS + 1];

/* The cloud. */
byte cloud = NOBODY;
byte dup = 0; /* imports of ours that landed on a device our import had created */
byte losses = 0;
byte refusals = 0;
byte qfails = 0;
bool foreign_done = false;
chan net = [2] of { byte, byte }; /* imports on their way: sender, request number */
chan ans[NDAEMONS + 1] = [1] of { mtype, byte };
byte waiting[NDAEMONS + 1]; /* request number a daemon waits for; 0: none */

/* The cloud: imports land (or are refused, or lost) in any order and at any time. */
active proctype cloud_proc()
{
	byte from, seq;
	mtype reply;
end:
	do
	:: atomic {
			/* Taking an import and landing it are one step: "in flight" covers the
			 * cloud's processing time as well as the network's. */
			net?from,seq;
			if
			:: losses < MAXLOSS -> losses++; goto cloud_next /* lost before it landed */
			:: refusals < MAXREFUSE -> refusals++; reply = REFUSED /* 503: nothing imported */
			:: true ->
				if
				:: cloud == NOBODY -> cloud = OURS; reply = OK
				:: cloud == OURS -> dup++; reply = CONFLICT
				:: cloud != NOBODY && cloud != OURS -> reply = CONFLICT
				fi
			fi;
			/* The answer reaches its sender only if it still waits; else it is lost. */
			if
			:: waiting[from] == seq && alive[from] && nfull(ans[from]) -> ans[from]!reply,seq
			:: true -> skip
			fi;
cloud_next:		skip
		}
	:: !foreign_done && cloud == NOBODY ->
		atomic {
			foreign_done = true;
			if
			:: cloud = THEIRS_SAME
			:: cloud = THEIRS_OTHER
			fi
		}
	od
}

bool crash_req[NDAEMONS + 1];

/* Crashes: any daemon, at any step, a bounded number of times. */
active proctype crasher()
{
	byte n[NDAEMONS + 1];
end:
	do
	:: n[1] < MAXCRASH && alive[1] && !crash_req[1] -> n[1]++; crash_req[1] = true
	:: n[2] < MAXCRASH && alive[2] && !crash_req[2] -> n[2]++; crash_req[2] = true
	od
}

/* Handing a token (and the record's AppKey) to a station. */
inline hand_out()
{
	assert(cloud == OURS || cloud == THEIRS_SAME)
}

proctype tpad(byte d)
{
	byte seq = 0;
	bool prev;
	mtype r;
	byte rs;

	alive[d] = true;
	do
	:: row == ISSUED || row == FAILED || row == FOREIGN -> break
	:: else ->
		{
			/* step_lookup(): read the row and claim the device (one transaction) */
			atomic {
				(lease == 0 || lease == d || !alive[lease]);
				if
				:: row == ISSUED || row == FAILED || row == FOREIGN -> goto next
				:: else
				fi;
				lease = d;
				if
				:: row == NONE ->
					/* send_attempt(): the attempt committed before any byte is sent */
					prev = maybe;
					seq++;
					waiting[d] = seq;
#if MUTANT == 3
					goto send_first /* the attempt recorded only after sending */
#else
					row = PENDING;
					maybe = true;
					goto send
#endif
				:: row == PENDING -> goto query
				fi
			}
#if MUTANT == 3
send_first:
			assert(empty(net) && cloud != OURS);
			net!d,seq;
			atomic { row = PENDING; maybe = true };
			goto wait;
#endif
send:			/* on_attempt_recorded(): tpa_import() */
			atomic {
				assert(empty(net) && cloud != OURS); /* nothing earlier may still land */
				if
#if MUTANT == 5
				/* a failure after the first byte taken for "never sent" */
				:: nfull(net) -> net!d,seq; goto not_landed
#endif
				:: nfull(net) -> net!d,seq
				/* never sent: queue full, no session, no OAuth2 token, a Retry-After hold */
				:: true -> goto not_landed
				fi
			}
wait:
			/* on_import(): the answer, or the request timeout */
			if
			:: ans[d]?r,eval(seq) -> /* a callback belongs to its own request */
				waiting[d] = 0;
				if
				:: r == OK -> atomic { /* commit_issued() */
						row = ISSUED; maybe = false; lease = 0; hand_out()
					}
					goto next
				:: r == CONFLICT ->
#if MUTANT == 2
					goto query_adopt_any; /* a 409 adopted whatever its origin */
#else
					if
					:: prev -> goto query /* an earlier attempt of ours may explain it */
					:: else -> atomic { /* commit_foreign() */
							row = FOREIGN; maybe = prev; lease = 0
						}
						goto next
					fi
#endif
				:: r == REFUSED -> goto not_landed
				fi
			:: atomic { /* timed out: the outcome is unknown; a late answer goes nowhere */
					waiting[d] = 0;
					do
					:: nempty(ans[d]) -> ans[d]?r,rs
					:: empty(ans[d]) -> break
					od
				}
				goto query
			fi;
not_landed:		/* conclude_not_landed(): FAILED only if no attempt may land */
			atomic {
				waiting[d] = 0;
				maybe = prev;
				if
				:: !maybe -> row = FAILED
				:: else -> skip
				fi;
				lease = 0
			}
			goto next;
query:			/* step_query() and on_query(): the read-only query, answered at once */
			if
			:: atomic {
				cloud == NOBODY ->
				/*
				 * on_not_found(): "not found" is trusted only for a query sent once
				 * upstream.settle-after has passed since the last attempt, i.e. when no
				 * import of ours can still land (the timing assumption, README.md).
				 */
				if
#if MUTANT == 1
				:: true ->
#else
				:: empty(net) ->
#endif
					/* every earlier attempt disproved; one new attempt (send_attempt) */
					prev = false;
					maybe = true;
					seq++;
					waiting[d] = seq;
					goto send
				:: nempty(net) -> lease = 0; goto next /* OutcomeUnknown{retryAfter} */
				fi
			}
			:: atomic { cloud == THEIRS_OTHER -> /* cloud_record_differs() */
					row = FOREIGN; maybe = false; lease = 0; goto next }
			:: atomic { cloud == OURS || cloud == THEIRS_SAME ->
					if
					:: maybe -> row = ISSUED; maybe = false; lease = 0; hand_out()
					:: else -> row = FOREIGN; lease = 0 /* no attempt of ours explains it */
					fi;
					goto next }
			:: atomic { qfails < MAXQFAIL -> qfails++; lease = 0;
#if MUTANT == 4
				goto give_up /* settled only by a new request or a restart */
#else
				goto next
#endif
				}
				/* the query failed: settled later, with backoff (due_set()) */
			fi;
#if MUTANT == 2
query_adopt_any:
			atomic {
				if
				:: cloud != NOBODY -> row = ISSUED; maybe = false; lease = 0; hand_out(); goto next
				:: else -> lease = 0; goto next
				fi
			}
#endif
next:			skip
		} unless {
			crash_req[d] ->
			/* kill -9: everything in memory is gone; the store and the network stay */
			atomic {
				alive[d] = false;
				waiting[d] = 0;
				do
				:: nempty(ans[d]) -> ans[d]?r,rs
				:: empty(ans[d]) -> break
				od;
				crash_req[d] = false;
				alive[d] = true /* restarted by systemd */
			}
		}
	od;
#if MUTANT == 4
give_up:
#endif
	skip
}

init
{
	atomic {
		run tpad(1);
		run tpad(2)
	}
}

/* No import of ours ever lands twice. */
active proctype no_duplicate()
{
end:
	atomic { dup > 0 -> assert(dup == 0) }
}

/* FAILED means the cloud holds no import of ours and none can still land. */
active proctype failed_means_not_imported()
{
end:
	atomic { (row == FAILED && (cloud == OURS || nempty(net))) -> assert(false) }
}

/* With a reachable cloud (bounded losses, fair scheduling) no row stays PENDING forever. */
ltl settles { <> (row == ISSUED || row == FAILED || row == FOREIGN) }
