// A full garbage collection on demand. After a large batch (seeding thousands of VMs from the
// configuration file, a big import) the heap holds hundreds of MB of garbage that V8 would collect
// only under allocation pressure; collecting it at once keeps the daemon's memory close to what it
// really holds (measured in docs/performance.md). Uses V8's own gc(), exposed at run time.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { requireAddon } from '../netns/addon.ts';

let gc: (() => void) | undefined;

export function collectGarbage(): void {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  // The first full collection frees the garbage; the second gives the emptied pages back to the
  // system (measured: heap committed 61 -> 13 MB for 8 MB live after a burst).
  gc();
  gc();
  // And the C heap's free memory (the native table's builds, Node's own buffers): malloc_trim.
  requireAddon().mallocTrim();
}
