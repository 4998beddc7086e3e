// The PATCH semantics of the admin API (networks and VMs): a flat JSON merge patch (RFC 7396 for
// records one level deep).

/** `target` with `patch` applied: null clears a field, undefined (absent) keeps it, any other value replaces it. */
export function mergePatch(target: object, patch: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete merged[key];
    else if (value !== undefined) merged[key] = value;
  }
  return merged;
}
