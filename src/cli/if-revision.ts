// `--if-revision N` (with a registry): a change or a removal goes through only if the record's
// revision in etcd is still N, the `revision` that `vm show` / `network show` print; otherwise
// REGISTRY_CONFLICT (exit 5) and nothing is written. What a controller uses for a read-modify-write.
import { Option } from '@commander-js/extra-typings';
import { integer } from './input.ts';

export function ifRevisionOption() {
  return new Option(
    '--if-revision <revision>',
    "with a registry: only if the record's revision (`show` prints it) is still this one; otherwise REGISTRY_CONFLICT, nothing written",
  ).argParser(integer('--if-revision'));
}

/** The admin API path with `if_revision` added when given. */
export function withIfRevision(path: string, revision: number | undefined): string {
  if (revision === undefined) return path;
  return `${path}${path.includes('?') ? '&' : '?'}if_revision=${revision}`;
}
