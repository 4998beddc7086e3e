// A cgroup of the container's own, named after the run, in every hierarchy systemd-nspawn uses
// (cgroup2, and the named "systemd" v1 one on hybrid hosts). On a host without systemd, nspawn
// (--keep-unit, --register=no) puts itself and the container below the cgroup it was started in
// (`…/supervisor`, `…/payload`): started in the test's own cgroup, it would leave those behind and
// two containers would share them. Started in `<test's cgroup>/<name>`, everything it makes is
// below a directory this run owns and removes (by name, once the container's processes are gone).
import { mkdirSync, readdirSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The directories (in each hierarchy) below which a child cgroup of this process goes. */
export function cgroupParents(): string[] {
  const self = new Map<string, string>(); // "0::" (cgroup2) or "name=systemd" -> path
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (m === null) continue;
    const [, id, controllers, path] = m as unknown as [string, string, string, string];
    if (id === '0' && controllers === '') self.set('cgroup2', path);
    else if (controllers.split(',').includes('name=systemd')) self.set('systemd', path);
  }
  const parents: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const [fstype, , superopts = ''] = right.split(' ');
    const fields = left.split(' ');
    const root = fields[3] ?? '/';
    const mountpoint = (fields[4] ?? '').replace(/\\040/g, ' ');
    let path: string | undefined;
    if (fstype === 'cgroup2') path = self.get('cgroup2');
    else if (fstype === 'cgroup' && superopts.split(',').includes('name=systemd')) path = self.get('systemd');
    if (path === undefined) continue;
    // A cgroup namespace: /proc/self/cgroup is relative to its root, the mount's root field too.
    const rel = root !== '/' && path.startsWith(root) ? path.slice(root.length) : path;
    const dir = join(mountpoint, rel);
    if (isDir(dir) && !parents.includes(dir)) parents.push(dir);
  }
  return parents;
}

/** Creates `<parent>/<name>` in every hierarchy; returns the directories. */
export function makeCgroups(name: string): string[] {
  const made: string[] = [];
  try {
    for (const parent of cgroupParents()) {
      mkdirSync(join(parent, name));
      made.push(join(parent, name));
    }
  } catch (err) {
    for (const d of made) removeCgroupSync(d);
    throw err;
  }
  if (made.length === 0) throw new Error('no cgroup hierarchy (cgroup2 or name=systemd) is mounted');
  return made;
}

/** The pids in a cgroup tree. */
export function cgroupPids(dir: string): number[] {
  const pids: number[] = [];
  for (const d of treeDepthFirst(dir)) {
    try {
      pids.push(...readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number));
    } catch {
      /* gone */
    }
  }
  return pids;
}

/** Removes a cgroup tree (children first); true when it is gone. A cgroup with processes stays. */
export function removeCgroupSync(dir: string): boolean {
  for (const d of treeDepthFirst(dir)) {
    try {
      rmdirSync(d);
    } catch {
      /* busy (processes still in it) or gone */
    }
  }
  return !isDir(dir);
}

/** Removes a cgroup tree, waiting up to `timeoutMs` for its processes to be gone. */
export async function removeCgroup(dir: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!removeCgroupSync(dir)) {
    if (Date.now() > deadline) throw new Error(`cgroup ${dir} could not be removed: pids ${cgroupPids(dir).join(' ') || 'none'}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function treeDepthFirst(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(d, e));
    out.push(d);
  };
  walk(dir);
  return out;
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
