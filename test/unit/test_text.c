/* Unit tests for text: the bounded copy and the decimal number, against snprintf. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "text.h"

static void check_copy(const char *src, size_t size)
{
	char got[32], want[32];
	memset(got, 'x', sizeof(got));
	int wn = snprintf(want, size, "%s", src);
	CHECK_INT(text_copy(got, size, src), (size_t)wn);
	CHECK_STR(got, want);
	CHECK(got[size - 1] == '\0' || strlen(got) < size);
	CHECK(size == sizeof(got) || got[size] == 'x'); /* nothing written past size */
}

static void check_u64(uint64_t v)
{
	char got[TEXT_U64_MAX], want[TEXT_U64_MAX];
	int wn = snprintf(want, sizeof(want), "%" PRIu64, v);
	CHECK_INT(text_u64(got, v), (size_t)wn);
	CHECK_STR(got, want);
}

int main(void)
{
	check_copy("", 1);
	check_copy("abc", 1);  /* only the NUL fits */
	check_copy("abc", 3);  /* cut by one */
	check_copy("abc", 4);  /* just fits */
	check_copy("abc", 32); /* room to spare */
	check_copy("70B3D5FFFE000001", 17);
	check_copy("70B3D5FFFE000001", 9);

	check_u64(0);
	check_u64(7);
	check_u64(10);
	check_u64(4294967295u);
	check_u64(1000000000000000000u);
	check_u64(UINT64_MAX);
	for (uint64_t v = 1; v < UINT64_MAX / 3; v = v * 3 + 1)
		check_u64(v);
	return tap_done();
}
