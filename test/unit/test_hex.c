/* Unit tests for the hex field rules. */
#include <errno.h>
#include <stdint.h>

#include "hex.h"
#include "tap.h"

int main(void)
{
	CHECK(hex_valid("0123456789abcdef", HEX_EUI));
	CHECK(hex_valid("0123456789ABCDEF", HEX_EUI));
	CHECK(!hex_valid("0123456789ABCDE", HEX_EUI));
	CHECK(!hex_valid("0123456789ABCDEF0", HEX_EUI));
	CHECK(!hex_valid("0123456789ABCDEG", HEX_EUI));
	CHECK(!hex_valid(" 123456789ABCDEF", HEX_EUI));
	CHECK(!hex_valid(NULL, HEX_EUI));
	CHECK(!hex_valid("", HEX_EUI));
	CHECK(hex_valid("", 0));
	CHECK(hex_valid_any("aB"));
	CHECK(!hex_valid_any(""));
	CHECK(!hex_valid_any("0x12"));

	char up[17];
	hex_upper(up, "0123456789abcdef", 16);
	CHECK_STR(up, "0123456789ABCDEF");

	uint8_t b[4];
	CHECK_INT(hex_decode("deadBEEF", b, 4), 0);
	CHECK(b[0] == 0xde && b[1] == 0xad && b[2] == 0xbe && b[3] == 0xef);
	CHECK_INT(hex_decode("deadBEE", b, 4), -EINVAL);
	CHECK_INT(hex_decode("deadBEEF00", b, 4), -EINVAL);
	char enc[9];
	hex_encode(b, 4, enc);
	CHECK_STR(enc, "DEADBEEF");
	/* One digit's value, either case; anything else -1. */
	CHECK_INT(hex_digit('0'), 0);
	CHECK_INT(hex_digit('9'), 9);
	CHECK_INT(hex_digit('a'), 10);
	CHECK_INT(hex_digit('F'), 15);
	CHECK_INT(hex_digit('g'), -1);
	CHECK_INT(hex_digit('\0'), -1);
	CHECK_INT(hex_digit((char)0xff), -1);
	return tap_done();
}
