/*
 * The CLI's HTTPS client (libcurl): one request to the policy daemon,
 * the server verified against the given bundle only, optional mTLS
 * with a key and certificate held in memory, a bounded answer.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

#define HTTP_CONNECT_TIMEOUT	10L
#define HTTP_TOTAL_TIMEOUT	60L

struct http_buf {
	char	*hb_data;
	size_t	 hb_len;
	size_t	 hb_cap;
	int	 hb_too_big;
};

int
http_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void
http_cleanup(void)
{
	curl_global_cleanup();
}

void
http_response_clear(struct http_response *r)
{
	free(r->hr_body);
	memset(r, 0, sizeof(*r));
}

static size_t
http_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_buf *b = arg;
	size_t n, cap;
	char *p;

	if (size != 0 && nmemb > HTTP_MAX_RESPONSE / size) {
		b->hb_too_big = 1;
		return 0;
	}
	n = size * nmemb;
	if (n > HTTP_MAX_RESPONSE - b->hb_len) {
		b->hb_too_big = 1;
		return 0;	/* libcurl aborts the transfer */
	}
	if (b->hb_len + n + 1 > b->hb_cap) {
		cap = b->hb_cap == 0 ? 4096 : b->hb_cap;
		while (cap < b->hb_len + n + 1)
			cap *= 2;
		if (cap > HTTP_MAX_RESPONSE + 1)
			cap = HTTP_MAX_RESPONSE + 1;
		if ((p = realloc(b->hb_data, cap)) == NULL)
			return 0;
		b->hb_data = p;
		b->hb_cap = cap;
	}
	memcpy(b->hb_data + b->hb_len, ptr, n);
	b->hb_len += n;
	b->hb_data[b->hb_len] = '\0';
	return n;
}

/* Wipes a header list: one entry may hold the bootstrap token. */
static void
http_headers_free(struct curl_slist *h)
{
	struct curl_slist *p;

	for (p = h; p != NULL; p = p->next)
		explicit_bzero(p->data, strlen(p->data));
	curl_slist_free_all(h);
}

int
http_request(const struct http_options *o, const char *method,
    const char *path, const char *body, const char *bearer,
    struct http_response *resp, char *err, size_t errlen)
{
	CURL *c = NULL;
	struct curl_slist *hdrs = NULL, *h;
	struct curl_blob cert, key;
	struct http_buf b;
	char errbuf[CURL_ERROR_SIZE], *url = NULL, *auth = NULL;
	size_t n;
	long status = 0;
	CURLcode cc;
	int ret = -1;

	memset(resp, 0, sizeof(*resp));
	memset(&b, 0, sizeof(b));
	errbuf[0] = '\0';
	n = strlen(o->ho_server) + strlen(path) + 1;
	if ((url = malloc(n)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	snprintf(url, n, "%s%s", o->ho_server, path);
	if ((c = curl_easy_init()) == NULL) {
		snprintf(err, errlen, "libcurl could not be initialised");
		goto out;
	}
	if ((h = curl_slist_append(hdrs, "Accept: application/json")) == NULL)
		goto nomem;
	hdrs = h;
	if (body != NULL) {
		if ((h = curl_slist_append(hdrs,
		    "Content-Type: application/json")) == NULL)
			goto nomem;
		hdrs = h;
	}
	if (bearer != NULL) {
		n = strlen("Authorization: Bearer ") + strlen(bearer) + 1;
		if ((auth = malloc(n)) == NULL)
			goto nomem;
		snprintf(auth, n, "Authorization: Bearer %s", bearer);
		h = curl_slist_append(hdrs, auth);
		explicit_bzero(auth, n);
		free(auth);
		auth = NULL;
		if (h == NULL)
			goto nomem;
		hdrs = h;
	}
	/*
	 * Only the given bundle is trusted (no system CAs, so a public CA
	 * cannot stand in for ours), only https, no redirects, bounded in
	 * time and size.
	 */
	if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
#if LIBCURL_VERSION_NUM >= 0x075500
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
#else
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS) !=
	    CURLE_OK ||
#endif
	    curl_easy_setopt(c, CURLOPT_CAINFO, o->ho_ca_bundle) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_CAPATH, NULL) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_SSLVERSION,
	    (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HTTP_VERSION,
	    (long)CURL_HTTP_VERSION_1_1) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT,
	    HTTP_CONNECT_TIMEOUT) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_TIMEOUT, HTTP_TOTAL_TIMEOUT) !=
	    CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE,
	    (curl_off_t)HTTP_MAX_RESPONSE) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_USERAGENT, "hsmca/" PACKAGE_VERSION) !=
	    CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_write) !=
	    CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
	    (o->ho_resolve != NULL &&
	    curl_easy_setopt(c, CURLOPT_RESOLVE, o->ho_resolve) != CURLE_OK))
		goto setopt;
	if (strcmp(method, "POST") == 0) {
		if (curl_easy_setopt(c, CURLOPT_POST, 1L) != CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_POSTFIELDS,
		    body != NULL ? body : "") != CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)(body != NULL ? strlen(body) : 0)) != CURLE_OK)
			goto setopt;
	} else if (strcmp(method, "GET") != 0) {
		snprintf(err, errlen, "method %s is not supported", method);
		goto out;
	}
	if (o->ho_cert != NULL) {
		/* In memory, so the pair used is the pair the caller read
		 * and checked, even if the files change meanwhile. */
		cert.data = (void *)(uintptr_t)o->ho_cert;
		cert.len = o->ho_cert_len;
		cert.flags = CURL_BLOB_NOCOPY;
		key.data = (void *)(uintptr_t)o->ho_key;
		key.len = o->ho_key_len;
		key.flags = CURL_BLOB_NOCOPY;
		if (curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert) !=
		    CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM") !=
		    CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key) != CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM") != CURLE_OK)
			goto setopt;
	}
	if ((cc = curl_easy_perform(c)) != CURLE_OK) {
		if (b.hb_too_big || cc == CURLE_FILESIZE_EXCEEDED)
			snprintf(err, errlen, "%s: the answer is larger than "
			    "%d bytes; not read", url, HTTP_MAX_RESPONSE);
		else
			snprintf(err, errlen, "%s: %s", url, errbuf[0] != '\0' ?
			    errbuf : curl_easy_strerror(cc));
		goto out;
	}
	if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) !=
	    CURLE_OK) {
		snprintf(err, errlen, "%s: no HTTP status", url);
		goto out;
	}
	if (b.hb_data == NULL && (b.hb_data = calloc(1, 1)) == NULL)
		goto nomem;
	resp->hr_status = status;
	resp->hr_body = b.hb_data;
	resp->hr_len = b.hb_len;
	b.hb_data = NULL;
	ret = 0;
	goto out;
 setopt:
	snprintf(err, errlen, "libcurl refused an option (too old?)");
	goto out;
 nomem:
	snprintf(err, errlen, "out of memory");
 out:
	if (c != NULL)
		curl_easy_cleanup(c);
	http_headers_free(hdrs);
	free(b.hb_data);
	free(url);
	return ret;
}
