/**
 * MongoDB connection strings carry secrets; what the store says about one
 * (start-up errors, /readyz, logs) must name the server without them.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { redactMongoUri, scrubSecrets, uriOption } from "@gatehouse/control-plane/store/mongo/uri.js";

const cases: Array<{ uri: string; redacted: string; secrets: string[] }> = [
  {
    uri: "mongodb://ops:s3cret@db1:27017,db2/gatehouse?replicaSet=rs0",
    redacted: "mongodb://ops:***@db1:27017,db2/gatehouse?replicaSet=rs0",
    secrets: ["s3cret"],
  },
  {
    // Unescaped @ and / in a password: the driver refuses it, and the message must still hide it whole.
    uri: "mongodb://ops:p@ss/w@rd@db1/?tls=true",
    redacted: "mongodb://ops:***@db1/?tls=true",
    secrets: ["p@ss/w@rd"],
  },
  {
    // No user in the authority: an @ in an option value is not a user:password separator.
    uri: "mongodb://db.example/?tls=true&tlsCertificateKeyFile=/k.pem&tlsCertificateKeyFilePassword=p@ssw0rd",
    redacted: "mongodb://db.example/?tls=true&tlsCertificateKeyFile=/k.pem&tlsCertificateKeyFilePassword=***",
    secrets: ["p@ssw0rd"],
  },
  {
    uri: "mongodb+srv://u:a%2Fb@cluster.example/?proxyHost=px&proxyUsername=pu&proxyPassword=PXYSECRET",
    redacted: "mongodb+srv://u:***@cluster.example/?proxyHost=px&proxyUsername=pu&proxyPassword=***",
    secrets: ["a%2Fb", "a/b", "PXYSECRET"],
  },
  {
    uri: "mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok123",
    redacted: "mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=***",
    secrets: ["tok123"],
  },
];

describe("MongoDB connection strings in messages", () => {
  for (const { uri, redacted, secrets } of cases) {
    test(`redacts ${redacted}`, () => {
      assert.equal(redactMongoUri(uri), redacted);
      // A driver message may quote the string, or only a secret of it, as written or decoded.
      const message = scrubSecrets(`failed to parse ${uri}; bad value ${secrets.join(" and ")}`, uri);
      for (const secret of secrets) assert.ok(!message.includes(secret), `${secret} in: ${message}`);
      assert.ok(message.includes(redacted), message);
    });
  }

  test("an option is read whatever the case of its name", () => {
    assert.equal(uriOption("mongodb://h/?serverselectiontimeoutms=300", "serverSelectionTimeoutMS"), "300");
    assert.equal(uriOption("mongodb://h/", "serverSelectionTimeoutMS"), undefined);
  });
});
