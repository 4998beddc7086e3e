// Replaces a file whole: written to a temporary file beside it, flushed, then renamed over it, so a
// reader (dnsmasq on SIGHUP, the daemon at start) sees the old content or the new, never half; a
// failure leaves the old file and no temporary behind. The mode is masked by the umask, unless
// `exactMode` (a file another user must read whatever the service's UMask=, e.g. dnsmasq's).
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';

export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o644, options: { exactMode?: boolean } = {}): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w', mode);
    try {
      if (options.exactMode === true) fchmodSync(fd, mode);
      writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
