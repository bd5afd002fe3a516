// A self-signed certificate for the TLS tests, made by the openssl command: DIR/NAME.crt and
// DIR/NAME.key, valid for a day, naming `san` ("IP:127.0.0.1", "DNS:db.example") as its
// subject alternative name and `cn` as its common name. Being its own issuer, the .crt is also
// the CA file a client that trusts it is given.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/process.h"

namespace hi::test {

inline void make_self_signed_cert(const std::string& dir, const std::string& name,
                                  const std::string& san,
                                  const std::string& cn = "hashinsight test") {
  SpawnOptions o;
  o.argv = {"openssl",  "req",
            "-x509",    "-newkey",
            "rsa:2048", "-nodes",
            "-keyout",  dir + "/" + name + ".key",
            "-out",     dir + "/" + name + ".crt",
            "-days",    "1",
            "-subj",    "/CN=" + cn,
            "-addext",  "subjectAltName=" + san};
  auto r = run_command(o);
  ASSERT_TRUE(r.ok() && r->status == 0) << (r.ok() ? r->output : r.error().message);
}

}  // namespace hi::test
