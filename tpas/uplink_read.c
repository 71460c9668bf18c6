/*
 * uplink_read: a DevEUI_uplink body read into struct uplink: the LRC's usual JSON by
 * uplink_fast, any other JSON by jansson, XML by libxml2 (no network, no entities, no DTD).
 */
#include "uplink_read.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xmlmemory.h>
#include <libxml/tree.h>

#include "cred.h"
#include "hex.h"
#include "message.h"
#include "uplink_fast.h"
#include "uplink_fields.h"
#include "wipe.h"

/*
 * A copy of body with the number token that ends at end put in quotes, in *ret (len + 2
 * bytes in *ret_len): 0, -EINVAL when no number ends there, or -ENOMEM.
 */
static int quote_number(const char *body, size_t len, size_t end, char **ret, size_t *ret_len)
{
	static const char number_chars[] = "0123456789+-.eE";
	if (end > len)
		return -EINVAL;
	size_t start = end;
	while (start > 0 && memchr(number_chars, body[start - 1], sizeof(number_chars) - 1))
		start--;
	if (start == end)
		return -EINVAL;
	char *out = wipe_malloc(len + 2);
	if (!out)
		return -ENOMEM;
	memcpy(out, body, start);
	out[start] = '"';
	memcpy(out + start + 1, body + start, end - start);
	out[end + 1] = '"';
	memcpy(out + end + 2, body + end, len - end);
	*ret = out;
	*ret_len = len + 2;
	return 0;
}

/* The value of the four hexadecimal digits at p (n bytes there at least), or -1. */
static long hex4(const char *p, size_t n)
{
	long v = 0;
	if (n < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int d = hex_digit(p[i]);
		if (d < 0)
			return -1;
		v = v << 4 | d;
	}
	return v;
}

/*
 * In the strings of the len bytes at s, rewrite in place each escape jansson refuses
 * although the JSON is valid (RFC 8259 7) to \uFFFD, of the same length: a UTF-16
 * surrogate not in a pair (as a UTF-8 decoder does with what it cannot decode) and
 * \u0000 (which jansson refuses unless told to, and then every reader of the stream or
 * the journal would have to be). Whether any was.
 */
static bool escapes_mend(char *s, size_t len)
{
	bool in_string = false, mended = false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"')
			in_string = !in_string;
		if (!in_string || s[i] != '\\')
			continue;
		if (i + 1 == len)
			break;
		if (s[i + 1] != 'u') {
			i++; /* \\, \" and the like: the next character is not an escape's start */
			continue;
		}
		long v = hex4(s + i + 2, len - i - 2);
		if (v >= 0xD800 && v <= 0xDBFF && i + 8 <= len && s[i + 6] == '\\' &&
		    s[i + 7] == 'u') {
			long low = hex4(s + i + 8, len - i - 8);
			if (low >= 0xDC00 && low <= 0xDFFF) {
				i += 11; /* a pair: one character */
				continue;
			}
		}
		if (v == 0 || (v >= 0xD800 && v <= 0xDFFF)) {
			memcpy(s + i + 2, "FFFD", 4);
			mended = true;
		}
		if (v >= 0)
			i += 5;
	}
	return mended;
}

/* Whether jansson refused a body for an escape escapes_mend() rewrites (or may have). */
static bool escape_refused(const json_error_t *jerr)
{
	switch (json_error_code(jerr)) {
	case json_error_null_character:
	case json_error_null_byte_in_key:
	case json_error_invalid_syntax: /* "invalid Unicode '\uD800'" */
		return true;
	default:
		return false;
	}
}

/*
 * The body's JSON into *ret: 0, -EBADMSG with a reason, or -ENOMEM. A number jansson
 * cannot hold (past 64-bit integers, or doubles) is read as a string of its text, and an
 * escape jansson refuses is mended (escapes_mend), rather than losing the whole uplink,
 * which the LRC would send again and again. Both only once jansson refused the body as
 * sent, on a copy (wiped when freed: it holds the AppSKey field): the usual body is read
 * once, as it came.
 */
static int load_json(const char *body, size_t len, json_t **ret, char *reason, size_t rn)
{
	json_error_t jerr;
	char *copy = NULL;
	bool mended = false;
	int quoted = 0, r = 0;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	while (!root) {
		if (json_error_code(&jerr) == json_error_numeric_overflow &&
		    quoted < UPLINK_MAX_NUMBER_TEXTS) {
			size_t n;
			char *q = NULL;
			r = quote_number(body, len, (size_t)jerr.position, &q, &n);
			if (r < 0)
				break;
			wipe_free(copy);
			copy = q;
			len = n;
			quoted++;
		} else if (!mended && escape_refused(&jerr)) {
			mended = true;
			if (!copy && !(copy = wipe_malloc(len ? len : 1))) {
				r = -ENOMEM;
				break;
			}
			if (copy != body)
				memcpy(copy, body, len);
			if (!escapes_mend(copy, len))
				break;
		} else {
			break;
		}
		body = copy;
		root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	}
	wipe_free(copy);
	if (root) {
		*ret = root;
		return 0;
	}
	if (r == -ENOMEM)
		return r;
	snprintf(reason, rn, "body is not JSON: %s (line %d)", jerr.text, jerr.line);
	return -EBADMSG;
}

static int parse_json(const char *body, size_t len, struct uplink *u, char *reason, size_t rn)
{
	json_t *root;
	int r = load_json(body, len, &root, reason, rn);
	if (r < 0)
		return r;
	json_t *up = json_object_get(root, "DevEUI_uplink");
	if (!json_is_object(up)) {
		r = uplink_fail(reason, rn, "body has no DevEUI_uplink object");
		goto out;
	}
	const char *key;
	json_t *val;
	json_object_foreach(up, key, val)
	{
		char num[32];
		const char *text = NULL;
		if (json_is_string(val)) {
			text = json_string_value(val);
		} else if (json_is_integer(val)) {
			snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
				 json_integer_value(val));
			text = num;
		} else if (strcmp(key, "AppSKey") == 0 && json_is_object(val)) {
			r = uplink_envelope_set(
			    u, json_string_value(json_object_get(val, "KEKLabel")),
			    json_string_value(json_object_get(val, "AESKey")), reason, rn);
			if (r < 0)
				goto out;
			continue;
		}
		if (!uplink_field_read(key, strlen(key))) {
			if (json_object_set(u->radio, key, val) < 0) {
				r = -ENOMEM;
				goto out;
			}
			continue;
		}
		if (!text) {
			r = uplink_fail(reason, rn, "%s has the wrong type", key);
			goto out;
		}
		r = uplink_field_set(u, key, text, reason, rn);
		if (r < 0)
			goto out;
		r = 0;
	}
	r = uplink_fields_check(u, reason, rn);
out:
	json_decref(root);
	return r;
}

/* The text of an element with only text inside, or NULL (caller xmlFree()s). */
static char *xml_text(xmlNode *n)
{
	for (xmlNode *c = n->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE)
			return NULL;
	return (char *)xmlNodeGetContent(n);
}

/* True if n has an element inside. */
static bool has_child_element(xmlNode *n)
{
	for (xmlNode *c = n->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE)
			return true;
	return false;
}

/* The text of the child element called name, or NULL (caller xmlFree()s). */
static char *xml_child_text(xmlNode *n, const char *name)
{
	for (xmlNode *c = n->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0)
			return xml_text(c);
	return NULL;
}

/* Strip leading and trailing blanks of s in place. */
static char *trim(char *s)
{
	while (*s && isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Put v (owned) in obj under name; a name seen again makes an array of the values. */
static int xml_merge(json_t *obj, const char *name, json_t *v)
{
	json_t *seen = json_object_get(obj, name);
	if (!v)
		return -ENOMEM;
	if (!seen)
		return json_object_set_new(obj, name, v) < 0 ? -ENOMEM : 0;
	if (json_is_array(seen))
		return json_array_append_new(seen, v) < 0 ? -ENOMEM : 0;
	json_t *both = json_array();
	if (!both || json_array_append(both, seen) < 0) {
		json_decref(both);
		json_decref(v);
		return -ENOMEM;
	}
	if (json_array_append_new(both, v) < 0 || json_object_set_new(obj, name, both) < 0)
		return -ENOMEM;
	return 0;
}

/* An element as JSON: its text (blanks trimmed) as a string, or, when it has elements
 * inside, an object of them (attributes and text beside elements left out). */
static json_t *xml_value(xmlNode *n)
{
	if (!has_child_element(n)) {
		char *raw = (char *)xmlNodeGetContent(n);
		json_t *v = json_string(raw ? trim(raw) : "");
		xmlFree(raw);
		return v;
	}
	json_t *obj = json_object();
	for (xmlNode *c = n->children; obj && c; c = c->next) {
		if (c->type == XML_ELEMENT_NODE &&
		    xml_merge(obj, (const char *)c->name, xml_value(c)) < 0) {
			json_decref(obj);
			obj = NULL;
		}
	}
	return obj;
}

static int parse_xml(const char *body, size_t len, struct uplink *u, char *reason, size_t rn)
{
	if (len > INT32_MAX)
		return uplink_fail(reason, rn, "body too large");
	/* No network, no entity expansion, no DTD loading: the LRC sends plain elements. */
	xmlDoc *doc = xmlReadMemory(body, (int)len, "uplink.xml", NULL,
				    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc) {
		const xmlError *e = xmlGetLastError();
		if (e && e->code == XML_ERR_NO_MEMORY) {
			xmlResetLastError();
			return -ENOMEM; /* not the body's fault: a 400 would lose the uplink */
		}
		snprintf(reason, rn, "body is not XML%s%.80s", e && e->message ? ": " : "",
			 e && e->message ? e->message : "");
		size_t n = strlen(reason);
		while (n && reason[n - 1] == '\n')
			reason[--n] = '\0';
		xmlResetLastError();
		return -EBADMSG;
	}
	int r = 0;
	if (doc->intSubset || doc->extSubset) {
		/* The LRC sends none; entities from one could only amplify. */
		r = uplink_fail(reason, rn, "body has a DTD");
		goto out;
	}
	xmlNode *root = xmlDocGetRootElement(doc);
	if (!root || strcmp((const char *)root->name, "DevEUI_uplink") != 0) {
		r = uplink_fail(reason, rn, "body has no DevEUI_uplink element");
		goto out;
	}
	for (xmlNode *c = root->children; c; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		const char *name = (const char *)c->name;
		if (!uplink_field_read(name, strlen(name))) {
			if ((r = xml_merge(u->radio, name, xml_value(c))) < 0)
				goto out;
			continue;
		}
		if (strcmp(name, "AppSKey") == 0 && has_child_element(c)) {
			char *label = xml_child_text(c, "KEKLabel");
			char *key = xml_child_text(c, "AESKey");
			r = uplink_envelope_set(u, label ? trim(label) : NULL,
						key ? trim(key) : NULL, reason, rn);
			xmlFree(label);
			xmlFree(key);
			if (r < 0)
				goto out;
			continue;
		}
		char *raw = xml_text(c);
		if (!raw)
			continue;
		char *text = trim(raw);
		r = uplink_field_set(u, name, text, reason, rn);
		xmlFree(raw);
		if (r < 0)
			goto out;
		r = 0;
	}
	r = uplink_fields_check(u, reason, rn);
out:
	xmlFreeDoc(doc);
	return r;
}

/* Whether v holds objects or arrays nested more than max deep (v itself counting). */
static bool too_deep(json_t *v, int max)
{
	if (!json_is_object(v) && !json_is_array(v))
		return false;
	if (max == 0)
		return true;
	const char *key;
	json_t *c;
	size_t i;
	if (json_is_array(v)) {
		json_array_foreach(v, i, c) if (too_deep(c, max - 1)) return true;
		return false;
	}
	json_object_foreach(v, key, c) if (too_deep(c, max - 1)) return true;
	return false;
}

/*
 * Refuse a radio field nested deeper than UPLINK_MAX_RADIO_DEPTH: a reply carrying it
 * could pass what a JSON reader takes (jansson's 2048 levels), and stop every
 * application's stream there.
 */
static int check_radio_depth(const struct uplink *u, char *reason, size_t rn)
{
	const char *key;
	json_t *v;
	json_object_foreach(u->radio, key, v)
	{
		if (!too_deep(v, UPLINK_MAX_RADIO_DEPTH))
			continue;
		bool named = strlen(key) <= 64 && proto_plain_text(key);
		return uplink_fail(reason, rn, "radio field %s%s%s is nested deeper than %d levels",
				   named ? "'" : "", named ? key : "(name not shown)",
				   named ? "'" : "", UPLINK_MAX_RADIO_DEPTH);
	}
	return 0;
}

static void uplink_init(struct uplink *u)
{
	cred_wipe(u, sizeof(*u));
	u->fport = -1;
}

static int parse(const char *body, size_t len, struct uplink *ret, char *reason, size_t reasonlen,
		 bool fast)
{
	uplink_init(ret);
	/* A UTF-8 byte order mark: XML allows it (libxml2 reads it), JSON's readers may skip
	 * it (RFC 8259 8.1), and some senders write one. */
	size_t bom = len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
	size_t i = bom;
	while (i < len && isspace((unsigned char)body[i]))
		i++;
	int r =
	    fast && i < len && body[i] == '{' ? uplink_parse_fast(body + bom, len - bom, ret) : 0;
	if (r != 0) {
		if (r < 0)
			uplink_clear(ret);
		return r < 0 ? r : 0;
	}
	uplink_clear(ret); /* what uplink_fast took before it left the body to jansson */
	uplink_init(ret);
	ret->radio = json_object();
	if (!ret->radio)
		return -ENOMEM;
	if (i == len)
		r = uplink_fail(reason, reasonlen, "body is empty");
	else if (body[i] == '{')
		r = parse_json(body + bom, len - bom, ret, reason, reasonlen);
	else if (body[i] == '<')
		r = parse_xml(body, len, ret, reason, reasonlen);
	else
		r = uplink_fail(reason, reasonlen, "body is neither JSON nor XML");
	if (r == 0)
		r = check_radio_depth(ret, reason, reasonlen);
	if (r < 0)
		uplink_clear(ret);
	return r;
}

void uplink_read_install(void)
{
	xmlMemSetup(wipe_free, wipe_malloc, wipe_realloc, wipe_strdup);
}

int uplink_parse(const char *body, size_t len, struct uplink *ret, char *reason, size_t reasonlen)
{
	/*
	 * Out of memory, jansson's parser drops a character it cannot keep, libxml2 a node or a
	 * text, or either fails as if the body were bad: the body was not read, and a 400
	 * would lose the uplink.
	 */
	unsigned long failures = wipe_alloc_failures();
	int r = parse(body, len, ret, reason, reasonlen, true);
	if (r != -ENOMEM && wipe_alloc_failures() != failures) {
		if (r == 0)
			uplink_clear(ret);
		r = -ENOMEM;
	}
	return r;
}

int uplink_parse_library(const char *body, size_t len, struct uplink *ret, char *reason,
			 size_t reasonlen)
{
	return parse(body, len, ret, reason, reasonlen, false);
}
