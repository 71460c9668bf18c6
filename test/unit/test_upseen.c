/* test-upseen: the recent set of (DevEUI, session, FCntUp) -> seq. */
#include <errno.h>
#include <stdio.h>

#include "tap.h"
#include "upseen.h"

int main(void)
{
	struct upseen *s = upseen_new();
	CHECK(s != NULL);
	if (!s)
		return tap_done();
	int64_t seq = 0;
	CHECK(!upseen_find(s, "0000000000000001", 1, 0, &seq));
	/* Enough keys to grow the table several times; every one found with its seq. */
	char dev[17];
	int refused = 0;
	for (int i = 0; i < 20000; i++) {
		snprintf(dev, sizeof(dev), "%016X", i % 100);
		if (upseen_add(s, dev, i % 7, (uint32_t)(i / 100), i + 1) != 0)
			refused++;
	}
	CHECK_INT(refused, 0);
	CHECK_INT(upseen_count(s), 20000);
	int missing = 0, wrong = 0;
	for (int i = 0; i < 20000; i++) {
		snprintf(dev, sizeof(dev), "%016X", i % 100);
		if (!upseen_find(s, dev, i % 7, (uint32_t)(i / 100), &seq))
			missing++;
		else if (seq != i + 1)
			wrong++;
	}
	CHECK_INT(missing, 0);
	CHECK_INT(wrong, 0);
	/* Each part of the key counts. */
	CHECK(!upseen_find(s, "0000000000000001", 2, 0, &seq)); /* i = 1 has session 1 */
	CHECK(!upseen_find(s, "0000000000000001", 1, 200, &seq));
	CHECK(!upseen_find(s, "000000000000000", 1, 0, &seq));
	CHECK(upseen_find(s, "0000000000000001", 1, 0, &seq));
	CHECK_INT(seq, 2);
	/* Added again: one key, the new seq. */
	CHECK_INT(upseen_add(s, "0000000000000001", 1, 0, 99999), 0);
	CHECK_INT(upseen_count(s), 20000);
	CHECK(upseen_find(s, "0000000000000001", 1, 0, &seq));
	CHECK_INT(seq, 99999);
	/* What no journal row can be: refused, nothing kept. */
	CHECK_INT(upseen_add(s, "00000000000000001", 1, 0, 5), -EINVAL);
	CHECK_INT(upseen_add(s, "0000000000000001", 1, 5, 0), -EINVAL);
	CHECK(!upseen_find(s, "00000000000000001", 1, 0, &seq));
	CHECK_INT(upseen_count(s), 20000);
	/* Cleared: nothing, and it fills again. */
	upseen_clear(s);
	CHECK_INT(upseen_count(s), 0);
	CHECK(!upseen_find(s, "0000000000000001", 1, 0, &seq));
	CHECK_INT(upseen_add(s, "0000000000000001", 1, 0, 7), 0);
	CHECK(upseen_find(s, "0000000000000001", 1, 0, &seq));
	CHECK_INT(seq, 7);
	upseen_free(s);
	upseen_free(NULL);
	return tap_done();
}
