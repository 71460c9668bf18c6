/*
 * events: the MESSAGE_IDs of tpas's events in the journal (journalctl -u tpas
 * MESSAGE_ID=...), logged with log_event(); tpas(8) lists them with their fields. Never
 * change one: users' queries rely on them.
 */
#pragma once

#include <syslog.h> /* the priorities log_event() takes */

/* A tunnel request answered with an error: STATUS, REASON, DEVEUI (or PEER). */
#define LOG_ID_AS_REFUSED "76b9d42487fa44238935ed01d93f8eeb"
/* A new session key (AppSKey) stored: DEVEUI, CUSTOMER_ID. */
#define LOG_ID_AS_SESSION "1b2b647c6fa34682945904c17775a1e7"
/* An ASTK imported: ASTK_ID, LABEL, CUSTOMER_ID, DEVEUI. */
#define LOG_ID_AS_ASTK "70134b51d63740ed8af4d41d2d3227dd"
/* A downlink posted to the LRC: DEVEUI, FCNTDN, OUTCOME (ok, failed), STATUS, REASON. */
#define LOG_ID_AS_DOWNLINK "3ff1912969b448b487202e7438eb7f58"
/* The journal could not commit a batch of uplinks (each answered 503): UPLINKS, REASON. */
#define LOG_ID_AS_JOURNAL_FAILED "b8d21461e29a4aa68d926fb171448835"
/* A webhook POST failed (retried later): WEBHOOK_URL, REASON, RETRY_MS. */
#define LOG_ID_AS_WEBHOOK_FAILED "89982b312f2d458aa91cf387953fd733"
/* A webhook POST was taken after failed ones: WEBHOOK_URL, FAILED_POSTS. */
#define LOG_ID_AS_WEBHOOK_BACK "62f2deebaab54273acfa240548e46c69"
/* The LRC link's circuit breaker opened (downlinks fail fast): UPSTREAM_URL, REASON. */
#define LOG_ID_AS_LRC_BREAKER_OPEN "dffc2bc531644bfbab7154f6324d9f6a"
/* The LRC link's circuit breaker closed again: UPSTREAM_URL. */
#define LOG_ID_AS_LRC_BREAKER_CLOSE "89419faa06684c4a84aa36da9fd5aae3"
