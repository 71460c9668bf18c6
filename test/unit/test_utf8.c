/* Unit tests for utf8: what is a valid sequence, and cleaning text from elsewhere. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "utf8.h"

static size_t len_of(const char *s)
{
	return utf8_len((const unsigned char *)s, strlen(s) ? strlen(s) : 1);
}

static void check_clean(const char *in, size_t n, const char *want)
{
	char *out = utf8_clean(in, n);
	CHECK(out != NULL);
	if (out)
		CHECK_STR(out, want);
	free(out);
}

int main(void)
{
	CHECK_INT(len_of("a"), 1);
	CHECK_INT(len_of("\xc3\xa9"), 2);	  /* é */
	CHECK_INT(len_of("\xe2\x82\xac"), 3);	  /* € */
	CHECK_INT(len_of("\xf0\x9f\x98\x80"), 4); /* U+1F600 */
	CHECK_INT(len_of("\xc0\xaf"), 0);	  /* overlong '/' */
	CHECK_INT(len_of("\xe0\x80\xaf"), 0);	  /* overlong, 3 bytes */
	CHECK_INT(len_of("\xed\xa0\x80"), 0);	  /* a surrogate */
	CHECK_INT(len_of("\xf4\x90\x80\x80"), 0); /* past U+10FFFF */
	CHECK_INT(len_of("\x80"), 0);		  /* a lone continuation byte */
	CHECK_INT(len_of("\xff"), 0);
	CHECK_INT(utf8_len((const unsigned char *)"\xe2\x82\xac", 2), 0); /* cut short */
	CHECK_INT(utf8_len((const unsigned char *)"\xc3", 4), 0); /* NUL ends it */

	check_clean("plain", 5, "plain");
	check_clean("caf\xc3\xa9", 5, "caf\xc3\xa9");
	check_clean("Requ\xeate", 7, "Requ\xef\xbf\xbdte"); /* Latin-1 */
	check_clean("a\0b", 3, "a\xef\xbf\xbd" "b");	      /* a NUL */
	check_clean("\xe2\x82", 2, "\xef\xbf\xbd\xef\xbf\xbd"); /* a sequence cut at the end */
	check_clean("", 0, "");

	/* Cuts keep characters whole; counts are of characters. */
	CHECK_INT(utf8_prefix("abc", 5), 3);
	CHECK_INT(utf8_prefix("abc", 3), 3);
	CHECK_INT(utf8_prefix("abc", 2), 2);
	CHECK_INT(utf8_prefix("a\xc3\xa9", 2), 1); /* inside é: all of it left out */
	CHECK_INT(utf8_prefix("a\xc3\xa9"
			      "b",
			      3),
		  3);					   /* after é */
	CHECK_INT(utf8_prefix("\xe2\x82\xac", 2), 0);	   /* inside € */
	CHECK_INT(utf8_prefix("\xf0\x9f\x98\x80!", 3), 0); /* inside U+1F600 */
	CHECK_INT(utf8_prefix("\xf0\x9f\x98\x80!", 4), 4);
	CHECK_INT(utf8_prefix("", 0), 0);
	CHECK_INT(utf8_chars("abc", 3), 3);
	CHECK_INT(utf8_chars("caf\xc3\xa9", 5), 4);
	CHECK_INT(utf8_chars("\xe2\x82\xac\xf0\x9f\x98\x80", 7), 2);
	CHECK_INT(utf8_chars("", 0), 0);
	char small[4];
	CHECK_INT(utf8_copy(small, sizeof(small), "ab\xc3\xa9"), 4); /* cut before é */
	CHECK_STR(small, "ab");
	CHECK_INT(utf8_copy(small, sizeof(small), "a\xc3\xa9"), 3); /* fits */
	CHECK_STR(small, "a\xc3\xa9");
	CHECK_INT(utf8_copy(small, 1, "abc"), 3);
	CHECK_STR(small, "");
	CHECK(utf8_valid("caf\xc3\xa9 \xe2\x82\xac"));
	CHECK(utf8_valid(""));
	CHECK(!utf8_valid("caf\xc3"));	    /* cut */
	CHECK(!utf8_valid("Requ\xeate"));   /* Latin-1 */
	CHECK(!utf8_valid("\xed\xa0\x80")); /* a surrogate */
	char dn[] = "O=Soci\xc3\xa9t\xc3\xa9, CN=\xc5?\xe2\x82";
	utf8_scrub(dn); /* é kept; a lead byte without its rest, a cut sequence: '?' */
	CHECK_STR(dn, "O=Soci\xc3\xa9t\xc3\xa9, CN=??"
		      "??");
	return tap_done();
}
