/** Where `ip netns` pins named network namespaces. */
export const NETNS_RUN_DIR = '/run/netns';

export function netnsPath(name: string): string {
  return `${NETNS_RUN_DIR}/${name}`;
}
