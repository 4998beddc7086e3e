// The daemon's pid file under state_dir: one daemon per state_dir, and `imds down` refuses to run
// while a daemon is alive (its sockets would pin the namespaces it is asked to remove).
import { mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { ImdsError } from './errors.ts';

export function pidFilePath(stateDir: string): string {
  return join(stateDir, 'imds.pid');
}

/** The pid of a live imds daemon using stateDir, if any. */
export function runningDaemon(stateDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFilePath(stateDir), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('imds') || cmdline.includes('main.js') ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function acquirePidFile(stateDir: string): () => void {
  mkdirSync(stateDir, { recursive: true, mode: 0o750 });
  const path = pidFilePath(stateDir);
  // Created exclusively (O_EXCL): of two processes starting at once (a daemon, `imds store
  // restore`), one gets the file and the other DAEMON_RUNNING. A stale file (its pid is dead) is
  // removed once, then the creation is tried again.
  let fd: number | undefined;
  for (let attempt = 0; fd === undefined; attempt++) {
    try {
      fd = openSync(path, 'wx', 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const other = runningDaemon(stateDir);
      if (other !== undefined || attempt > 0) {
        const pid = other ?? Number(readFileSync(path, 'utf8').trim());
        throw new ImdsError('DAEMON_RUNNING', `another imds daemon (pid ${pid}) uses state_dir ${stateDir}`, { details: { pid } });
      }
      rmSync(path, { force: true });
    }
  }
  writeSync(fd, `${process.pid}\n`);
  closeSync(fd);
  return () => {
    try {
      if (readFileSync(path, 'utf8').trim() === String(process.pid)) rmSync(path, { force: true });
    } catch {
      /* already gone */
    }
  };
}
