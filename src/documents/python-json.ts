// JSON text exactly as Python's json.dumps writes it with its defaults (what Nova sends):
// ", " and ": " separators, insertion order, and ensure_ascii (everything outside space..~
// escaped as \uXXXX, surrogate pairs as two escapes).

const NON_ASCII = /[\u007f-\uffff]/g;

function escapeNonAscii(text: string): string {
  return text.replace(NON_ASCII, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function pythonJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  switch (typeof value) {
    case 'string':
      return escapeNonAscii(JSON.stringify(value));
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('pythonJson: non-finite number');
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(pythonJson).join(', ')}]`;
      const parts: string[] = [];
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (v === undefined) continue;
        parts.push(`${escapeNonAscii(JSON.stringify(k))}: ${pythonJson(v)}`);
      }
      return `{${parts.join(', ')}}`;
    }
    default:
      throw new TypeError(`pythonJson: cannot encode ${typeof value}`);
  }
}
