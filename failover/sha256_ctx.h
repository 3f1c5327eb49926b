#pragma once
/* OpenSSL's SHA256_CTX and its SHA256_Init/Update/Final, which OpenSSL 3 marks deprecated in
 * favour of EVP. The EVP calls allocate (a context, and a copy of one per HMAC); the fast
 * beats' real-time threads must not, so failover/beat_auth.cc builds HMAC-SHA256 on these
 * plain structs. Only that file calls them. */
#ifndef OPENSSL_SUPPRESS_DEPRECATED
#define OPENSSL_SUPPRESS_DEPRECATED
#endif
#include <openssl/sha.h>
