// An RSA key pair with the public half in OpenSSH format (what cloudbase-init encrypts to).
import { generateKeyPairSync } from 'node:crypto';

function mpint(b64url: string): Buffer {
  let bytes = Buffer.from(b64url, 'base64url');
  if (((bytes[0] as number) & 0x80) !== 0) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return bytes;
}

function field(data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  return Buffer.concat([len, data]);
}

export function rsaKeyPair(bits = 2048, comment = 'test@imds'): { sshPublic: string; privatePem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const jwk = publicKey.export({ format: 'jwk' }) as { n: string; e: string };
  const blob = Buffer.concat([field(Buffer.from('ssh-rsa')), field(mpint(jwk.e)), field(mpint(jwk.n))]);
  return {
    sshPublic: `ssh-rsa ${blob.toString('base64')} ${comment}`,
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
  };
}
