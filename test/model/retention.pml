/*
 * retention.pml: tpas's journal seq counter and store.retention-days (ARCHITECTURE.md §14,
 * journal schema 4). A writer journals NU uplinks, each under SEQ_LAST + 1 (the newest
 * row's seq, or meta's uplink_seq once the table is empty); this host's clock, which
 * stamps each row's received time, moves on and may step back once. A pruner removes old
 * uplinks in steps of at most LIMIT rows: in seq order from the first row, up to the first
 * row that is not old, never past the webhook's cursor when there is a webhook; a step
 * that empties the table writes the last seq into meta. An application (the webhook, or
 * a stream that resumes from its cursor) reads the rows in seq order. README.md beside
 * this file says which C each transition stands for.
 *
 * Checked: a seq is never given twice (not even after retention emptied the table); a
 * removed row was old and, with a webhook, delivered; the rows left are one run of seqs,
 * so what an application misses is always below the first row, which the stream names
 * (prunedThrough); the webhook gets every seq.
 *
 * spin -DMUTANT=n breaks one rule on purpose (test/model/check.sh): 17, a removal that
 * empties the table writes no uplink_seq; 18, every old row removed wherever it is (as by
 * an index on the received time); 19, the webhook's cursor not honoured.
 */

#ifndef MUTANT
#define MUTANT 0
#endif
#ifndef NU
#define NU 4 /* uplinks journaled: seqs 1 to NU when no seq is given twice */
#endif
#define NP 3	/* removal steps */
#define LIMIT 2 /* rows a step removes at most (PRUNE_STEP_ROWS) */
#define MAXCLK 3
#define MAXS (NU + 1) /* one more seq than the writer needs: a seq given twice shows */

byte rt[MAXS + 1]; /* per seq: its row's received time + 1; 0: no row */
byte floor = 0;	   /* meta's uplink_seq */
byte gmax = 0;	   /* the largest seq ever given (not in the journal: for the checks) */
byte clk = 1;	   /* this host's clock */
bool stepped = false;
byte cursor = 0; /* the application's: every seq up to it was handled */
bool webhook;	 /* the application is the webhook: nothing it has not had is removed */

/* SEQ_LAST in tpas/journal.c: the newest row's seq, or meta's uplink_seq if larger. */
inline seq_last(ret)
{
	ret = floor;
	i = 1;
	do
	:: i <= MAXS -> if :: rt[i] != 0 && i > ret -> ret = i :: else fi; i++
	:: else -> break
	od
}

/*
 * The rows left are one run of seqs: what a stream misses is below the first row, which it
 * names (prunedThrough). Checked after each step that adds or removes rows.
 */
inline one_run()
{
	rf = 0;
	rl = 0;
	i = 1;
	do
	:: i <= MAXS ->
		if
		:: rt[i] != 0 && rf == 0 -> rf = i; rl = i
		:: rt[i] != 0 && rf != 0 -> assert(rl + 1 == i); rl = i
		:: else -> skip
		fi;
		i++
	:: else -> break
	od
}

proctype writer()
{
	byte n = 0, s, i, rf, rl;
	do
	:: n < NU ->
		atomic {
			seq_last(s);
			s++;
			assert(s > gmax && s <= MAXS); /* never given twice */
			gmax = s;
			rt[s] = clk + 1;
			n++;
			one_run()
		}
	:: clk < MAXCLK -> clk++
	:: !stepped && clk > 0 -> clk--; stepped = true /* the clock stepped back */
	:: n == NU -> break
	od
}

proctype pruner()
{
	byte k = 0, before, keep, through, s, n, i, rf, rl;
	bool any;
	do
	:: k < NP ->
		atomic {
			/* Older than the clock by some retention (0 or 1 tick here). */
			if
			:: before = clk
			:: clk > 0 -> before = clk - 1
			fi;
			keep = MAXS;
#if MUTANT != 19
			if :: webhook -> keep = cursor :: else fi;
#endif
			/* old_uplinks(): seq order from the first row, at most LIMIT, up to a young one */
			through = 0;
			n = 0;
			s = 1;
			do
			:: s <= keep && s <= MAXS && n < LIMIT ->
				if
				:: rt[s] == 0 -> s++
				:: rt[s] != 0 && rt[s] - 1 >= before ->
#if MUTANT == 18
					s++ /* a young row is passed over: every old one goes */
#else
					break
#endif
				:: rt[s] != 0 && rt[s] - 1 < before -> through = s; n++; s++
				fi
			:: else -> break
			od;
			/* DELETE ... WHERE seq <= through (MUTANT 18: only the old ones) */
			i = 1;
			do
			:: i <= through ->
				if
				:: rt[i] != 0 && rt[i] - 1 < before ->
					assert(!webhook || i <= cursor || MUTANT == 19);
					rt[i] = 0
				:: rt[i] != 0 && rt[i] - 1 >= before ->
					assert(MUTANT == 18); /* only the mutant skips young rows */
				:: rt[i] == 0 -> skip
				fi;
				i++
			:: else -> break
			od;
			/* The table emptied: the counter goes on from meta. */
			any = false;
			i = 1;
			do
			:: i <= MAXS -> any = any || rt[i] != 0; i++
			:: else -> break
			od;
#if MUTANT != 17
			if :: n > 0 && !any && through > floor -> floor = through :: else fi;
#endif
			one_run();
			k++
		}
	:: k == NP -> break
	od
}

/* The application: the next row after its cursor, in seq order. */
proctype app()
{
	byte s;
end:	do
	:: atomic {
		s = cursor + 1;
		do
		:: s <= MAXS && rt[s] == 0 -> s++
		:: else -> break
		od;
		if
		:: s <= MAXS ->
			assert(!webhook || s == cursor + 1); /* the webhook gets every seq */
			cursor = s
		:: else -> skip
		fi
	}
	od
}

init
{
	atomic {
		if :: webhook = true :: webhook = false fi;
		run writer();
		run pruner();
		run app()
	}
}
