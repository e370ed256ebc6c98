/*
 * TLS for OPT_STARTTLS: GnuTLS X.509 over memory buffers.
 *
 *   socket --recv--> rawin --nbd_tls_put_cipher--> in --pull--> gnutls --> plaintext
 *   plaintext --> gnutls --push--> out --(server.c sends it)--> socket
 *
 * GnuTLS never touches the socket: its transport callbacks only move bytes between these
 * buffers, so the reactor keeps owning all socket I/O and nothing blocks. When `in` runs dry
 * the pull callback reports EAGAIN and GnuTLS returns GNUTLS_E_AGAIN, which the callers
 * treat as "wait for the next recv".
 *
 * --tls-ca turns on client certificate verification: the client must present a certificate
 * signed by that CA.
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

struct nbd_tls {
	gnutls_certificate_credentials_t cred;
	bool verify_client;
};

struct nbd_tls_session {
	gnutls_session_t s;
	struct nbd_buf in; /* ciphertext not yet consumed; in_off bytes already read */
	size_t in_off;
	struct nbd_buf out;
};

/* Returns 0 or a negative errno. */
int nbd_tls_create(struct nbd_tls **out, const char *cert, const char *key, const char *ca)
{
	struct nbd_tls *t = calloc(1, sizeof(*t));
	int ret;

	if (t == NULL) {
		return -ENOMEM;
	}
	ret = gnutls_certificate_allocate_credentials(&t->cred);
	if (ret < 0) {
		goto err_free;
	}
	ret = gnutls_certificate_set_x509_key_file(t->cred, cert, key, GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		st_error("TLS certificate %s / key %s: %s", cert, key, gnutls_strerror(ret));
		goto err_cred;
	}
	if (ca != NULL) {
		ret = gnutls_certificate_set_x509_trust_file(t->cred, ca, GNUTLS_X509_FMT_PEM);
		if (ret < 0) {
			st_error("TLS CA %s: %s", ca, gnutls_strerror(ret));
			goto err_cred;
		}
		t->verify_client = true;
	}
	*out = t;
	return 0;

err_cred:
	gnutls_certificate_free_credentials(t->cred);
err_free:
	free(t);
	return -EINVAL;
}

void nbd_tls_destroy(struct nbd_tls *t)
{
	if (t == NULL) {
		return;
	}
	gnutls_certificate_free_credentials(t->cred);
	free(t);
}

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const void *p, size_t n)
{
	struct nbd_tls_session *s = ptr;

	if (nbd_buf_put(&s->out, p, n) < 0) {
		gnutls_transport_set_errno(s->s, ENOMEM);
		return -1;
	}
	return (ssize_t)n;
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *p, size_t n)
{
	struct nbd_tls_session *s = ptr;
	size_t avail = s->in.len - s->in_off;

	if (avail == 0) {
		gnutls_transport_set_errno(s->s, EAGAIN);
		return -1;
	}
	if (n > avail) {
		n = avail;
	}
	memcpy(p, s->in.p + s->in_off, n);
	s->in_off += n;
	if (s->in_off == s->in.len) {
		s->in.len = 0;
		s->in_off = 0;
	}
	return (ssize_t)n;
}

/* Returns 0 or a negative errno. */
int nbd_tls_session_new(struct nbd_tls *t, struct nbd_tls_session **out)
{
	struct nbd_tls_session *s = calloc(1, sizeof(*s));
	int ret;

	if (s == NULL) {
		return -ENOMEM;
	}
	ret = gnutls_init(&s->s, GNUTLS_SERVER | GNUTLS_NONBLOCK);
	if (ret < 0) {
		free(s);
		return -ENOMEM;
	}
	ret = gnutls_set_default_priority(s->s);
	ret = ret ?: gnutls_credentials_set(s->s, GNUTLS_CRD_CERTIFICATE, t->cred);
	if (ret < 0) {
		gnutls_deinit(s->s);
		free(s);
		return -EINVAL;
	}
	if (t->verify_client) {
		gnutls_certificate_server_set_request(s->s, GNUTLS_CERT_REQUIRE);
		gnutls_session_set_verify_cert(s->s, NULL, 0);
	}
	gnutls_transport_set_ptr(s->s, s);
	gnutls_transport_set_push_function(s->s, tls_push);
	gnutls_transport_set_pull_function(s->s, tls_pull);
	*out = s;
	return 0;
}

void nbd_tls_session_free(struct nbd_tls_session *s)
{
	if (s == NULL) {
		return;
	}
	gnutls_deinit(s->s);
	nbd_buf_free(&s->in);
	nbd_buf_free(&s->out);
	free(s);
}

/* Returns 0 or -ENOMEM. */
int nbd_tls_put_cipher(struct nbd_tls_session *s, const void *p, size_t n)
{
	if (s->in_off > 0 && s->in_off == s->in.len) {
		s->in.len = s->in_off = 0;
	} else if (s->in_off > 0) {
		nbd_buf_consume(&s->in, s->in_off);
		s->in_off = 0;
	}
	return nbd_buf_put(&s->in, p, n);
}

struct nbd_buf *nbd_tls_cipher_out(struct nbd_tls_session *s)
{
	return &s->out;
}

/* Returns 1 when established, 0 when it needs more input, or a negative errno. */
int nbd_tls_handshake(struct nbd_tls_session *s)
{
	int ret = gnutls_handshake(s->s);

	if (ret == GNUTLS_E_SUCCESS) {
		return 1;
	}
	if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(ret)) {
		return 0;
	}
	st_info("TLS handshake: %s", gnutls_strerror(ret));
	return -EPROTO;
}

/* Returns bytes decrypted, 0 when more ciphertext is needed, -ECONNRESET on close_notify. */
long nbd_tls_recv(struct nbd_tls_session *s, void *p, size_t n)
{
	ssize_t ret = gnutls_record_recv(s->s, p, n);

	if (ret > 0) {
		return (long)ret;
	}
	if (ret == 0) {
		return -ECONNRESET;
	}
	if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED) {
		return 0;
	}
	if (!gnutls_error_is_fatal((int)ret)) {
		return 0;
	}
	st_debug("TLS receive: %s", gnutls_strerror((int)ret));
	return -EPROTO;
}

/* Returns 0 or a negative errno. The push callback never blocks, so every byte is taken. */
int nbd_tls_send(struct nbd_tls_session *s, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t ret = gnutls_record_send(s->s, b, n);

		if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED) {
			continue;
		}
		if (ret < 0) {
			st_debug("TLS send: %s", gnutls_strerror((int)ret));
			return -EPROTO;
		}
		b += ret;
		n -= (size_t)ret;
	}
	return 0;
}
