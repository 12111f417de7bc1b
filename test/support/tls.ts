/**
 * Certificates for TLS and mTLS tests, made with the `openssl` CLI in a temp
 * dir: a CA, a server certificate for localhost and 127.0.0.1, and a client
 * certificate, all signed by that CA. Keys are P-256, valid for one day.
 *
 * @see https://docs.openssl.org/3.0/man1/openssl-req/
 * @see https://docs.openssl.org/3.0/man1/openssl-x509/
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Paths of PEM files; `remove()` deletes them. */
export interface TestCertificates {
  dir: string;
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
  remove(): Promise<void>;
}

async function openssl(dir: string, ...args: string[]): Promise<void> {
  await run("openssl", args, { cwd: dir });
}

const KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Makes a CA named `caName` and a server and a client certificate signed by it. */
export async function makeCertificates(caName = "Gatehouse Test CA"): Promise<TestCertificates> {
  const dir = await mkdtemp(join(tmpdir(), "gatehouse-tls-"));
  await openssl(
    dir,
    "req",
    "-x509",
    ...KEY,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "1",
    "-subj",
    `/CN=${caName}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  );
  const issue = async (name: string, subject: string, extensions: string) => {
    await writeFile(join(dir, `${name}.ext`), extensions);
    await openssl(dir, "req", ...KEY, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject);
    await openssl(
      dir,
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "1",
      "-extfile",
      `${name}.ext`,
    );
  };
  await issue(
    "server",
    "/CN=localhost",
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
  );
  await issue(
    "client",
    "/CN=gatehouse-agent",
    "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
  );
  return {
    dir,
    caFile: join(dir, "ca.crt"),
    serverCertFile: join(dir, "server.crt"),
    serverKeyFile: join(dir, "server.key"),
    clientCertFile: join(dir, "client.crt"),
    clientKeyFile: join(dir, "client.key"),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
