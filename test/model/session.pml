/*
 * session.pml: which session tpas journals an uplink under (ARCHITECTURE.md §14), for one
 * device that rejoins once: session A, then session B, NF uplinks each (FCntUp 0 to NF - 1).
 * An uplink that carries the AppSKey field names its session by the key
 * (session_from_field() in tpas/tunnel.c). One without it is read with the newest session
 * that had begun by the uplink's frame time, else the newest (journal_session_at() in
 * tpas/journal.c), and refused with a 503 (noSession) when that session began after its
 * frame or has another DevAddr than the uplink's. A session begins at the frame of the
 * POST that made it, moved back by each commit of one of its earlier frames with the key.
 * The LRC posts each uplink with or without the field, delays any POST for as long as it
 * likes (across the rejoin), posts again one whose answer it did not get or was refused
 * (the same request, or signed again: another Token), and answers get lost; tpas can be
 * killed. README.md beside this file says which C each transition stands for.
 *
 * spin -DMUTANT=n breaks one rule on purpose; test/model/check.sh shows that Spin then
 * finds a counterexample, so the checks of the real rules can fail. (Mutants 1 to 6 are
 * tpas.pml's.)
 */

#ifndef MUTANT
#define MUTANT 0
#endif
#ifndef MAXCRASH
#define MAXCRASH 1
#endif
#ifndef MAXLOSS
#define MAXLOSS 1 /* answers lost on their way to the LRC */
#endif
#ifndef MAXDUP
#define MAXDUP 2 /* resends while an earlier POST of the uplink is still out (delayed) */
#endif
#ifndef NF
#define NF 2 /* uplinks per session: FCntUp 0 to NF - 1 (2 or 3) */
#endif

/*
 * Time is one clock for the network and tpas: 0 before the device's first frame, then
 * uplink u's frame is received by the network at FT(u) = u + 1 (A's frames, the rejoin,
 * B's frames), and `now' moves on with them. Each POST's body carries its uplink's frame
 * time (the body's Time); the signed Time is when the LRC signed it, never earlier, so
 * frame_time() (the body's Time capped at the signed one) is FT(u) and the signed Time
 * only makes the Token: 0, the first signature, or 1, signed again.
 */
#define NS 2		 /* sessions: 0 (A) and 1 (B, after the rejoin) */
#define NU (NS * NF)	 /* uplink u is FCntUp u % NF of session u / NF */
#define SESS(u) ((u) / NF)
#define FT(u) ((u) + 1)
#define NOSESS 255

/*
 * Every uplink carries its DevAddr. The rejoin gives the device a new one, unless
 * -DSAMEADDR: the network gave it the same DevAddr again. A session's DevAddr is that of
 * its uplinks (its row follows each committed uplink's, ST_UPLINK_SESSION), so it is
 * ADDR of the session.
 */
#ifdef SAMEADDR
#define ADDR(s) 0
#else
#define ADDR(s) (s)
#endif

/* The journal (SQLite, durable). */
byte row[NU];		/* (session, FCntUp) of the unique index: uplink + 1 it holds; 0: none */
byte tokrow[NU * 2];	/* (uplink, Token) of the Token index: row + 1 it is in; 0: none */
byte jcount[NU];	/* rows holding the device's uplink u */
bool known[NS];		/* the session table: a session per AppSKey seen */
byte start[NS];		/* its received_ms: the earliest frame time with its key (see tpas) */
byte sid[NS];		/* its id (creation order) */
byte nsess = 0;

/* The network: the device's frames, the LRC's POSTs in flight (any order, any delay). */
byte now = 0;
byte fly[NU * 4];	/* POSTs of (uplink, Token, with the AppSKey field) in flight */
byte nfly = 0;
byte out[NU];		/* POSTs of the uplink without an answer yet */
bool posted[NU];
bool acked[NU];
bool refused[NU];	/* its last answer was a 404 or a 503, and no session changed since */
byte dups = 0;
byte losses = 0;
byte crashes = 0;

#define FLY(u, tk, key) fly[((u) * 2 + (tk)) * 2 + (key)]

/*
 * The LRC posts uplink u once its frame was received: signed once (Token 0), or again
 * (1) when it posts it again. A session's first uplink (after the join) carries the
 * AppSKey field; a later one with or without it.
 */
inline post(u, tk)
{
	if
	:: u % NF == 0 -> FLY(u, tk, 1)++; key = 1
	:: u % NF != 0 -> FLY(u, tk, 1)++; key = 1
	:: u % NF != 0 -> FLY(u, tk, 0)++; key = 0
	fi;
	printf("LRC: POST %c%d, Token %d, AppSKey field %d\n", 'A' + SESS(u), u % NF, tk,
	       key);
	nfly++;
	out[u]++
}

/*
 * -DEARLY: the LRC posts any uplink at any time after its frame. -DEARLYOLD: only the
 * session before the rejoin's (A's uplinks delayed across it, in any order). Otherwise a
 * session's later uplinks are posted once its first one was answered 200 (see README.md).
 */
#if defined(EARLY)
#define MAY_POST(u) (FT(u) <= now)
#elif defined(EARLYOLD)
#define MAY_POST(u) (FT(u) <= now && (SESS(u) == 0 || u % NF == 0 || acked[u - u % NF]))
#else
#define MAY_POST(u) (FT(u) <= now && (u % NF == 0 || acked[u - u % NF]))
#endif

/*
 * Post uplink n: for the first time, again once the last POST got no answer, or again
 * while one is still out (the LRC's time-out, the first sitting in a connection). One that
 * was refused is posted again once the session table changed (the LRC's back-off, as the
 * model has it): a refusal changes nothing in tpas, and its answer to a POST without the
 * field depends on the session table only, so such a POST before then would get the same
 * refusal (one with the field would be taken, as the uplink's first POST could have been).
 * So the LRC posts everything until it is answered 200, and the model stays finite; an
 * uplink that no change of the sessions makes acceptable stays refused, and the check at
 * rest finds it.
 */
inline lrc_post(n)
{
	atomic {
		MAY_POST(n) && !acked[n] && !refused[n] && (out[n] == 0 || dups < MAXDUP) ->
		if :: out[n] > 0 -> dups++ :: else fi;
		if
		:: !posted[n] -> posted[n] = true; post(n, 0) /* its first signature */
		:: posted[n] -> post(n, 0) /* the same request again */
		:: posted[n] -> post(n, 1) /* signed again: another Time, another Token */
		fi }
}

/* (The uplinks are spelled out here and in tpas's PICK: NS is fixed, NF 2 or 3.) */
active proctype lrc()
{
	bit key;
end:
	do
	:: atomic { /* the device's next frame (a rejoin before B's) */
		now < NU -> now++;
		printf("time %d: the network receives %c%d\n", now, 'A' + SESS(now - 1),
		       (now - 1) % NF) }
	:: lrc_post(0)
	:: lrc_post(1)
	:: lrc_post(2)
	:: lrc_post(3)
#if NF == 3
	:: lrc_post(4)
	:: lrc_post(5)
#endif
	od
}

/* What the LRC gets back: a 200 (or the answer is lost), or a refusal. */
inline answer(u)
{
	if
	:: losses < MAXLOSS -> losses++; printf("tpas: 200, lost\n")
	:: true -> acked[u] = true; printf("tpas: 200\n")
	fi;
	out[u]--
}

inline refuse(u)
{
	refused[u] = true;
	out[u]--
}

/* A session was made or began earlier: what was refused may be taken now. */
inline sessions_changed()
{
	for (i : 0 .. NU - 1) {
		refused[i] = false
	}
}

/*
 * journal_session_at(): the newest session begun by frame time t (received_ms <= t),
 * else the newest; NOSESS when the device has none. Mutant 7 takes the newest.
 */
#if MUTANT == 7
#define BEGUN(i, t) true /* mutant 7: every session counts as begun: the newest */
#else
#define BEGUN(i, t) (start[i] <= (t))
#endif
#define NEWER(i, s) (start[i] > start[s] || (start[i] == start[s] && sid[i] > sid[s]))
inline session_at(t, s)
{
	s = NOSESS;
	for (i : 0 .. NS - 1) {
		if
		:: known[i] && (s == NOSESS || (BEGUN(i, t) && !BEGUN(s, t)) ||
				(BEGUN(i, t) == BEGUN(s, t) && NEWER(i, s))) -> s = i
		:: else
		fi
	}
}

/* The time a session begins at: its frame's (mutant 8: when tpas got the POST). */
#if MUTANT == 8
#define STAMP(u) now
#else
#define STAMP(u) FT(u)
#endif
/* Rule 2: the session began after the frame (mutant 10: not checked). */
#if MUTANT == 10
#define TOO_LATE(s, u) false
#else
#define TOO_LATE(s, u) (start[s] > FT(u))
#endif
/* Rule 3: the session's DevAddr is not the uplink's (mutant 9: not checked). */
#if MUTANT == 9
#define OTHER_ADDR(s, u) false
#else
#define OTHER_ADDR(s, u) (ADDR(s) != ADDR(SESS(u)))
#endif

#define PICK(n) :: fly[n] > 0 -> k = n

/*
 * tpas takes one POST in one step: tunnel_check() picks the session (a new one is made
 * there, in memory), the writer commits the uplink, and the new session with it, in one
 * transaction. In tpas other POSTs are checked between the two, and those of a new session
 * (with its field or its key, or without the field and begun after it) take it from
 * memory, so they see what the model's step in one order or the other shows: the session
 * made, or not yet; a session is begun earlier only by the commit of one of its uplinks
 * with the key, which no check with the key reads and a check without it sees or not;
 * and which of two rows with one (session, FCntUp) commits first only swaps which check
 * fails. Losing what is between the two is the crash below, which loses a new session
 * with its uplink.
 */
active proctype tpas()
{
	byte u, tk, key, s, k, i;
	bit no;			/* refused: 404 without a session, else 503 noSession */
	bit made;		/* this POST's check made its session */
end:
	do
	:: atomic {
		nfly > 0 ->
		/* the next POST to reach tpas: any of those in flight */
		if
		PICK(0) PICK(1) PICK(2) PICK(3) PICK(4) PICK(5) PICK(6) PICK(7)
		PICK(8) PICK(9) PICK(10) PICK(11) PICK(12) PICK(13) PICK(14) PICK(15)
#if NF == 3
		PICK(16) PICK(17) PICK(18) PICK(19) PICK(20) PICK(21) PICK(22) PICK(23)
#endif
		fi;
		fly[k]--;
		nfly--;
		u = k / 4;
		tk = (k / 2) % 2;
		key = k % 2;
		no = 0;
		made = 0;
		printf("tpas: gets %c%d, Token %d, AppSKey field %d\n", 'A' + SESS(u), u % NF, tk,
		       key);
		/* tunnel_check(): the session */
		if
		:: key && known[SESS(u)] -> s = SESS(u) /* session_from_field(): its key */
		:: key && !known[SESS(u)] && tokrow[u * 2 + tk] != 0 ->
			s = NOSESS /* a journaled Token: a replay, answered with its seq */
		:: key && !known[SESS(u)] && tokrow[u * 2 + tk] == 0 ->
			/* a new session, committed with the uplink; received_ms: the frame time */
			made = 1;
			known[SESS(u)] = true;
			start[SESS(u)] = STAMP(u);
			nsess++;
			sid[SESS(u)] = nsess;
			s = SESS(u);
			sessions_changed();
			printf("tpas: new session %c, begun at %d\n", 'A' + s, start[s])
		:: !key ->
			session_at(FT(u), s);
			if
			:: s != NOSESS && TOO_LATE(s, u) ->
				/* rule 2: no session had begun by its frame */
				printf("tpas: %c began at %d, after the frame: 503\n", 'A' + s, start[s]);
				s = NOSESS; no = 1
			:: s != NOSESS && !TOO_LATE(s, u) && OTHER_ADDR(s, u) ->
				/* rule 3: the device's DevAddr in that session was another */
				printf("tpas: %c has another DevAddr: 503\n", 'A' + s);
				s = NOSESS; no = 1
			:: else
			fi
		fi;
		if
		:: s != NOSESS -> printf("tpas: read with session %c\n", 'A' + s)
		:: else
		fi;
		if
		:: !key && s == NOSESS ->
			/* 404 unknown DevEUI, or 503 noSession: nothing journaled, the LRC posts
			 * it again */
			refuse(u);
			if
			:: no -> printf("tpas: 503 noSession\n")
			:: else -> printf("tpas: 404\n")
			fi
		:: key && s == NOSESS -> answer(u)
		:: s != NOSESS && crashes < MAXCRASH ->
			/* kill -9 before the commit: a session made for this uplink is lost with it,
			 * the LRC's connections drop (what was in them is lost), it posts again what
			 * it got no answer for */
			crashes++;
			printf("tpas: killed before the commit\n");
			if
			:: made ->
				known[s] = false;
				start[s] = 0;
				sid[s] = 0;
				nsess--;
				printf("tpas: session %c lost with it\n", 'A' + s)
			:: else
			fi;
			for (i : 0 .. NU * 4 - 1) {
				fly[i] = 0
			}
			nfly = 0;
			for (i : 0 .. NU - 1) {
				out[i] = 0
			}
		:: s != NOSESS ->
			/* the writer's commit: uplink_store() */
			if
			:: tokrow[u * 2 + tk] != 0 -> /* the Token index: a replay */
				printf("tpas: a replay of its Token\n")
			:: tokrow[u * 2 + tk] == 0 && row[s * NF + u % NF] != 0 ->
				/* the unique index on (DevEUI, session, FCntUp): a replay, which must
				 * be the same uplink, not another session's */
				printf("tpas: a replay of (%c, %d), which holds %c%d\n", 'A' + s, u % NF,
				       'A' + SESS(row[s * NF + u % NF] - 1), (row[s * NF + u % NF] - 1) % NF);
				assert(row[s * NF + u % NF] == u + 1)
			:: tokrow[u * 2 + tk] == 0 && row[s * NF + u % NF] == 0 ->
				/* journaled: under the session the device sent it in, once */
				printf("tpas: journaled as (%c, %d)\n", 'A' + s, u % NF);
				assert(s == SESS(u));
				row[s * NF + u % NF] = u + 1;
				tokrow[u * 2 + tk] = s * NF + u % NF + 1;
				jcount[u]++;
				assert(jcount[u] == 1);
				/* the session update: one with the key begins its session earlier */
				if
#if MUTANT != 11
				:: key && STAMP(u) < start[s] ->
					start[s] = STAMP(u);
					sessions_changed();
					printf("tpas: session %c now begun at %d\n", 'A' + s, start[s])
#endif
				:: else
				fi
			fi;
			answer(u)
		fi }
	od
}

/*
 * When nothing can move any more: every uplink was answered 200 and is journaled once.
 * (An uplink refused that no change of the sessions can make acceptable ends here too.)
 */
active proctype at_rest()
{
	byte u;
	atomic {
		timeout ->
		assert(nfly == 0);
		for (u : 0 .. NU - 1) {
			assert(acked[u] && jcount[u] == 1 && row[u] == u + 1)
		}
	}
}
