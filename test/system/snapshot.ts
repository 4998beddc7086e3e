// What is in the container, taken before the package is installed and again after it is purged:
// links, network namespaces, the nftables ruleset, processes and files. `leftAfterPurge` names
// whatever the package left: "apt purge leaves no namespace, link, table, process or file behind".
import type { Container } from './container.ts';
import { TOOLS } from './guest.ts';

export interface Snapshot {
  links: string[];
  netns: string[];
  ruleset: string;
  processes: string[];
  files: Set<string>;
}

const MARK = 'imds-systest-snapshot';

/** One shell run inside; sections separated by `## NAME` lines. The test's own files are left out. */
const SCRIPT = `
echo '## links'; ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'
echo '## netns'; ip netns list | awk '{ print $1 }'
echo '## ruleset'; nft list ruleset
echo '## processes'
for d in /proc/[0-9]*; do
  cmd="$(tr '\\0' ' ' < "$d/cmdline" 2>/dev/null)" || continue
  case "$cmd" in '' | *${MARK}* | 'tr '*) continue ;; esac
  echo "$cmd"
done
echo '## files'
find / -xdev -path '${TOOLS}' -prune -o -print
find /run /tmp -xdev -print
`;

export async function snapshot(c: Container): Promise<Snapshot> {
  const out = (await c.exec(['sh', '-c', SCRIPT, MARK], { timeoutMs: 120_000 })).stdout;
  const sections = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of out.split('\n')) {
    const m = /^## (\w+)$/.exec(line);
    if (m !== null) sections.set(m[1] as string, (current = []));
    else if (line !== '') current.push(line);
  }
  const get = (name: string): string[] => sections.get(name) ?? [];
  return {
    links: get('links').sort(),
    netns: get('netns').sort(),
    ruleset: get('ruleset').join('\n'),
    processes: get('processes').map((p) => p.trim()),
    files: new Set(get('files')),
  };
}

/**
 * Where the system itself writes while packages come and go (dpkg's and apt's records, logs, the
 * journal, systemd's runtime state, /run/netns that the test's guests needed): a new path there
 * counts only when its name says imds. Anywhere else, any new path counts.
 */
const VOLATILE = [
  '/var/log/',
  '/var/lib/dpkg/',
  '/var/lib/apt/',
  '/var/cache/',
  '/var/lib/systemd/',
  '/run/systemd/',
  '/run/log/',
  '/run/netns',
  '/run/user/',
  '/tmp/',
  '/var/tmp/',
];

/** On-demand services of the container's own systemd, which may come and go at any time. */
const TRANSIENT_PROCESS = /^(\/usr)?\/lib\/systemd\/systemd-|^\(sd-/;

/** What `after` holds that `before` did not: each entry says what and where. */
export function leftAfterPurge(before: Snapshot, after: Snapshot): string[] {
  const left: string[] = [];
  for (const l of after.links) if (!before.links.includes(l)) left.push(`link ${l}`);
  for (const n of after.netns) if (!before.netns.includes(n)) left.push(`network namespace ${n}`);
  if (after.ruleset !== before.ruleset) left.push(`nftables ruleset:\n${after.ruleset}`);
  for (const p of after.processes) {
    if (!before.processes.includes(p) && !TRANSIENT_PROCESS.test(p)) left.push(`process ${p}`);
  }
  for (const f of after.files) {
    if (before.files.has(f)) continue;
    if (VOLATILE.some((v) => f.startsWith(v)) && !/imds/.test(f)) continue;
    left.push(`file ${f}`);
  }
  return left;
}
