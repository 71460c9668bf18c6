/*
 * tpas.pml: tpas's exactly-once rules (ARCHITECTURE.md §14, issue "tpas") for one device
 * with two uplinks and two downlinks, as built in tpas/tunnel.c, tpas/journal.c,
 * tpas/asapi.c and tpas/downlink.c: an LRC that resends any uplink whose answer it did not
 * get (with the same Token, or signed again), answers that get lost, tpas killed at any
 * step and restarted with nothing of its memory, an application that follows the stream
 * and resumes from the last sequence number it handled. README.md beside this file says
 * which C each transition stands for.
 *
 * spin -DMUTANT=n breaks one rule on purpose; test/model/check.sh shows that Spin then
 * finds a counterexample, so the checks of the real rules can fail.
 */

#ifndef MUTANT
#define MUTANT 0
#endif
#ifndef MAXCRASH
#define MAXCRASH 2
#endif
#ifndef MAXLOSS
#define MAXLOSS 1 /* answers lost on their way to the LRC */
#endif
#ifndef MAXDUP
#define MAXDUP 1 /* resends while the first request is still being handled (LRC time-out) */
#endif
#ifndef MAXFAIL
#define MAXFAIL 1 /* batches whose COMMIT fails (a full disk): answered 503, resent */
#endif

/*
 * With -DPLAINKEY the writer's replay check is what the recent set, uplink_seen and the
 * highest FCntUp stand for (checked without it): a journaled row of the uplink. The runs
 * with -DREPORT use it, to keep their state space small.
 *
 * With -DREPORT each uplink carries the LRC's FCntDn as it was when the LRC sent it, and
 * the session's counter follows it (never down); without, it carries 0 (a smaller state
 * space, so two crashes can be checked).
 */
#ifdef REPORT
#define REPORTED lrcnext
#else
#define REPORTED 0
#endif

#define NU 2	   /* uplinks: 0 and 1 (FCntUp 1 and 2 of one session) */
/*
 * The session is the device's AppSKey, whatever field brings it (one AES block, or an
 * envelope, under one ASTK or another: session_from_field() finds a known key by
 * journal_session_with_key()), so which field a request carries cannot matter and the
 * model leaves it out. Mutant 6 keys the session by the field, as tpas once did: a
 * request then carries the key in field 0 or 1, each field its own session.
 */
#if MUTANT == 6
#define FIELDS 2
#else
#define FIELDS 1
#endif
#define ND 2	   /* downlinks the application sends */
#define MAXSEQ 12  /* journal rows (more than NU only if a rule is broken) */
#define MAXFCNT 6  /* downlink counters */

/* The journal (SQLite, durable): rows by seq, and per uplink how many rows hold it. */
byte nextseq = 0;	/* SEQ_LAST: the last seq handed out by a commit */
byte jrow[MAXSEQ + 1];	/* uplink + 1 of each seq; 0: none */
byte jcount[NU];	/* rows holding the uplink (the unique index keeps it at most 1) */
byte jseq[NU];		/* the seq of its first row */
byte fnext = 0;		/* the session's fcnt_dn_next */
/*
 * Where the writer finds a replay with a new Time: (DevEUI, session, FCntUp) in the
 * durable uplink_seen table (sn), or in the writer's recent set in memory (mem), which
 * holds the committed uplinks not moved there yet (journal.c: seen_move, seen_reload).
 */
bool sn[NU];
bool mem[NU];
byte fails = 0;
/*
 * The session's highest FCntUp plus one (memory; hik: known): an uplink at or above it is
 * no replay without a look (device_find(), high_raise()). Uplink u has FCntUp u + 1.
 * Read from uplink_seen when not known, raised by each insert (mutant 14 does not),
 * forgotten at a crash and, when it grew large, at a move.
 */
byte hi = 0;
bool hik = false;
/*
 * With -DDROP: the recent set dropped for its size while moves fail (recent_drop()):
 * until a move succeeds, a replay below the highest FCntUp is looked up in the table.
 */
bool dropped = false;

/* The LRC. */
/* uplink, Token (1 or 2: signed once, or again), the LRC's FCntDn when it sent it */
chan req = [4] of { byte, byte, byte, byte };	/* ... and the AppSKey field */
chan ans = [8] of { byte, byte };	/* uplink, seq of the 200 (0: none named) */
byte out[NU];				/* requests of the uplink without an answer yet */
bool acked[NU];
byte ackseq[NU];
byte dups = 0;
byte losses = 0;
bool used[MAXFCNT + 1];			/* FCntDn the LRC received */
byte lrcnext = 0;			/* the LRC's FCntDn: one past the last it received */

/* tpas's memory (lost at a crash). */
bool pj[NU * 2];			/* a pending uplink (one per Token) handed to the writer */
byte fol[NU * 2];			/* requests with the same Token waiting for its commit */
byte pf[NU * 2];			/* the FCntDn a pending uplink reported */
#if FIELDS > 1
byte pfl[NU * 2];			/* the field of a pending uplink's key */
byte jsess[FIELDS * NU];		/* mutant 6: rows of the uplink in each field's session */
#endif
chan recent = [4] of { byte, byte };	/* asapi_remember(): committed uplinks kept encoded */
chan dlreq = [2] of { byte };		/* SendDownlink calls */
chan takes = [2] of { byte };		/* their counters queued for the writer thread */
chan taken = [2] of { byte };		/* counters committed, held in order until sent */

/* The application: the last seq it handled (its own, durable) and what it got. */
byte cursor = 0;
byte seen[NU];

bool crash_req = false;
byte crashes = 0;

/* What the LRC was told is durable: every uplink answered 200 is journaled, under the seq
 * the answer named. Checked at each crash (before memory goes) and at the end. */
inline acked_is_journaled()
{
	assert(!acked[0] || (jcount[0] > 0 && (ackseq[0] == 0 || ackseq[0] == jseq[0])));
	assert(!acked[1] || (jcount[1] > 0 && (ackseq[1] == 0 || ackseq[1] == jseq[1])))
}

/* Answer an uplink's request (or lose the answer: the LRC resends). */
inline answer(u, s)
{
	if
	:: losses < MAXLOSS -> losses++; out[u]--
	:: true -> ans!u,s
	fi
}

/* The LRC sends uplink u, signed once (Token 1) or again (2), its key in one field. */
inline send(u)
{
	if
	:: req!u,1,REPORTED,0
	:: req!u,2,REPORTED,0
#if FIELDS > 1
	:: req!u,1,REPORTED,1
	:: req!u,2,REPORTED,1
#endif
	fi
}

active proctype lrc()
{
	byte u, s;
end:
	do
	:: atomic { /* send, or send again once the last request got no answer */
		!acked[0] && out[0] == 0 -> out[0]++; send(0) }
	:: atomic { !acked[1] && out[1] == 0 -> out[1]++; send(1) }
	:: atomic { /* a resend while the first is still being handled */
		dups < MAXDUP && !acked[0] && out[0] > 0 -> dups++; out[0]++; send(0) }
	:: atomic { dups < MAXDUP && !acked[1] && out[1] > 0 -> dups++; out[1]++; send(1) }
	:: atomic { ans?u,s -> out[u]--;
		/* a replay's 200 names the seq of the first */
		assert(!acked[u] || s == 0 || ackseq[u] == 0 || ackseq[u] == s);
		acked[u] = true;
		if :: s != 0 -> ackseq[u] = s :: else fi }
	od
}

/*
 * The LRC's downlink endpoint: a counter is never used twice with the session's key, and
 * a device's downlinks come in FCntDn order (the LRC queues them as they come; the device
 * drops one whose FCntDn is not above the last it took).
 */
inline dl_send(f)
{
	assert(!used[f]);
	assert(f >= lrcnext);
	used[f] = true;
	if :: f + 1 > lrcnext -> lrcnext = f + 1 :: else fi
}

active proctype tpas()
{
	byte u, tk, i, s, k, f, rf, fl;
	bool fresh, rep;
end:
	do
	:: true ->
		{
end_serving:
			do
			:: atomic { req?u,tk,rf,fl -> /* request_cb() → tunnel_check() */
				i = u * 2 + tk - 1;
				if
				:: pj[i] -> fol[i]++ /* inflight_find(): the same request, committing */
				:: else -> pj[i] = true; pf[i] = rf /* inflight_add(), queued for the writer */
#if FIELDS > 1
					; pfl[i] = fl
#endif
#if MUTANT == 1
					/* the 200 sent when the uplink is handed over, not once committed */
					; answer(u, 0)
#endif
#if MUTANT == 4
					/* the streams told when it is handed over, not once committed */
					; if :: nfull(recent) -> recent!nextseq + 1,u :: full(recent) -> skip fi
#endif
				fi }
			:: atomic { /* the writer thread commits one pending uplink (a batch of one;
				      * a batch is one transaction: all of it or nothing) */
				(pj[0] || pj[1] || pj[2] || pj[3]) ->
				if :: pj[0] -> i = 0 :: pj[1] -> i = 1 :: pj[2] -> i = 2 :: pj[3] -> i = 3 fi;
				u = i / 2;
#ifdef PLAINKEY
				rep = jcount[u] > 0;
#else
				if
				:: !hik -> hi = (sn[1] -> 3 : (sn[0] -> 2 : 0)); hik = true
				:: else
				fi;
				if
				:: u + 1 >= hi -> rep = false
#if MUTANT == 16
				/* the dropped (empty) set still trusted */
				:: else -> rep = mem[u] || sn[u]
#else
				:: else -> rep = (dropped -> jcount[u] > 0 : mem[u] || sn[u])
#endif
				fi;
#endif
				if
#if MUTANT == 6
				/* the unique index on (device, session, FCntUp), a session per field */
				:: jsess[pfl[i] * NU + u] > 0 -> fresh = false; s = jseq[u]
#elif MUTANT != 2
				/* device_find(): the recent set, then uplink_seen: a replay */
				:: rep -> fresh = false; s = jseq[u]
#endif
				:: fails < MAXFAIL && !rep ->
					/* the batch's COMMIT fails: nothing of it is kept, its requests
					 * are answered 503 and resent; seen_settle() reads the recent set
					 * again from the table (mutant 13 keeps what the batch added) */
					fails++;
#if MUTANT == 13
					mem[u] = true;
#endif
					if :: u + 2 > hi -> hi = u + 2 :: else fi; /* raised in apply */
					out[u]--;
					out[u] = out[u] - fol[i];
					fol[i] = 0;
					pj[i] = false;
					goto failed
				:: else ->
					fresh = true;
					mem[u] = true; /* upseen_add() once inserted */
#if MUTANT != 14
					if :: u + 2 > hi -> hi = u + 2 :: else fi;
#endif
					nextseq++;
					jrow[nextseq] = u + 1;
					jcount[u]++;
#if FIELDS > 1
					jsess[pfl[i] * NU + u]++;
#endif
					/* ST_UPLINK_SESSION in the same transaction: the session's counter
					 * follows the LRC's, never down */
#if MUTANT == 5
					fnext = pf[i];
#else
					if :: pf[i] > fnext -> fnext = pf[i] :: else fi;
#endif
					if :: jseq[u] == 0 -> jseq[u] = nextseq :: else fi;
					s = nextseq
				fi;
				/* answer_list(), after the commit: the pending one and its followers */
#if MUTANT != 1
				answer(u, s);
#endif
				do
				:: fol[i] > 0 -> fol[i]--; answer(u, s)
				:: else -> break
				od;
				pj[i] = false;
#if MUTANT != 4
				if
				:: fresh && nfull(recent) -> recent!s,u
				:: !fresh || full(recent) -> skip /* the stream reads the journal instead */
				fi
#endif
failed:				skip
				}
			:: atomic { /* seen_move(), between batches: the committed rows go into
				      * uplink_seen in one transaction, the recent set is emptied */
#ifdef PLAINKEY
				false ->
#else
				(mem[0] || mem[1]) ->
#endif
				sn[0] = sn[0] || jcount[0] > 0; sn[1] = sn[1] || jcount[1] > 0;
				mem[0] = false; mem[1] = false; dropped = false;
				if :: hik = false :: skip fi }
#ifdef DROP
			:: atomic { /* moves failing, the set at its most: recent_drop() */
				!dropped && (mem[0] || mem[1]) ->
				mem[0] = false; mem[1] = false; dropped = true }
#endif
			:: atomic { dlreq?k -> /* SendDownlink → downlink_send() */
#if MUTANT == 3
				f = fnext; dl_send(f) }  /* sent before the counter is committed */
				atomic { fnext = f + 1 }
#else
				takes!k } /* journal_fcnt_dn_queue(): for the writer's next batch */
#endif
			:: atomic { /* the writer thread commits a counter (in a batch with uplinks
				      * or alone; a batch of one, as for uplinks) and hands it back */
				takes?k -> f = fnext; fnext++; taken!f }
			:: atomic { /* counter_taken(), release_held(): sent one at a time, in the
				      * order they were taken */
				taken?f -> dl_send(f) }
#if MUTANT == 15
			:: atomic { /* the second taken posted first (two LRC sessions) */
				len(taken) == 2 -> taken?f; taken?k; dl_send(k); taken!f }
#endif
			od
		} unless {
			crash_req ->
			/* kill -9: memory is gone, the journal stays; the LRC's connections drop, so
			 * it resends what it got no answer for; the applications reconnect. */
			atomic {
				acked_is_journaled();
				do
				:: req?u,tk,rf,fl -> out[u]--
				:: empty(req) -> break
				od;
				i = 0;
				do
				:: i < NU * 2 ->
#if MUTANT != 1
					if :: pj[i] -> out[i / 2]-- :: else fi;
#endif
					out[i / 2] = out[i / 2] - fol[i];
					pj[i] = false;
					fol[i] = 0;
					i++
				:: else -> break
				od;
				do
				:: recent?s,u
				:: empty(recent) -> break
				od;
				do
				:: dlreq?k
				:: empty(dlreq) -> break
				od;
				do
				:: takes?k
				:: empty(takes) -> break
				od;
				do
				:: taken?f
				:: empty(taken) -> break
				od;
				/* the recent set is gone with the rest; at the next open, seen_open()
				 * moves every row after uplink_seen there (mutant 12 does not) */
				mem[0] = false; mem[1] = false; dropped = false;
				hik = false;
#if MUTANT != 12
				sn[0] = sn[0] || jcount[0] > 0; sn[1] = sn[1] || jcount[1] > 0;
#endif
				crash_req = false
			}
		}
	od
}

/* The application: follows io.tpad.AS.Uplinks after its cursor, from what tpas keeps in
 * memory when it follows closely, else from the journal (committed rows only). */
active proctype app()
{
	byte s, u, k = 0;
end:
	do
	:: atomic { recent?s,u ->
		if
		:: s == cursor + 1 -> seen[u]++; cursor = s
		:: else -> skip /* older, or past a gap: the journal is read instead */
		fi }
	:: atomic { cursor < nextseq && jrow[cursor + 1] != 0 ->
		/* sub_pump(): journal_uplinks_after(cursor) */
		cursor++; seen[jrow[cursor] - 1]++ }
	:: atomic { k < ND && nfull(dlreq) -> dlreq!k; k++ }
	od
}

active proctype crasher()
{
end:
	do
	:: atomic { crashes < MAXCRASH && !crash_req -> crashes++; crash_req = true }
	od
}

/* The unique index: no uplink is journaled twice. */
active proctype journaled_once()
{
end:
	atomic { (jcount[0] > 1 || jcount[1] > 1) -> assert(false) }
}

/* When nothing can move any more: every uplink was answered 200, is journaled once under
 * the seq its answer named, and the application handled each exactly once. */
active proctype at_rest()
{
	atomic {
		timeout ->
		assert(acked[0] && acked[1]);
		acked_is_journaled();
		assert(seen[0] == 1 && seen[1] == 1)
	}
}
