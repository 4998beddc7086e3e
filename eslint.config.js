// ESLint (typescript-eslint, type-aware) for the whole tree; Prettier formats (eslint-config-prettier
// turns off the rules that would fight it). Type-aware rules catch what matters in an event-driven
// daemon: promises nobody awaits or catches, async functions handed to event emitters, switches
// over step kinds that miss one.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

// Line length. Prettier wraps code at its printWidth (140) but never breaks a string, a template
// literal, a URL or a comment, and eslint-config-prettier turns `max-len` off, so both limits are
// set after it (the last objects below): `max-len` holds code and comments to 140 and lets a line
// pass that is long only because of a string, template literal, URL or regular expression; the
// local `hard-line-limit` holds every line, strings and comments included, to 160.
const HARD_LINE_LIMIT = 160;
const local = {
  rules: {
    'hard-line-limit': {
      meta: {
        type: 'layout',
        docs: { description: `no line longer than ${HARD_LINE_LIMIT} characters, whatever it holds` },
        schema: [],
        messages: { long: 'This line has {{length}} characters; no line may have more than {{max}} (strings and comments included).' },
      },
      create(context) {
        return {
          Program() {
            context.sourceCode.lines.forEach((line, i) => {
              if (line.length <= HARD_LINE_LIMIT) return;
              context.report({
                loc: { start: { line: i + 1, column: HARD_LINE_LIMIT }, end: { line: i + 1, column: line.length } },
                messageId: 'long',
                data: { length: String(line.length), max: String(HARD_LINE_LIMIT) },
              });
            });
          },
        };
      },
    },
  },
};

export default tseslint.config(
  { ignores: ['dist/', 'native/build/', 'node_modules/', 'bench/.build/', 'bench/results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { projectService: { allowDefaultProject: ['*.js', '*.mjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after'] }],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'max-lines': ['error', { max: 350, skipBlankLines: true, skipComments: true }],
      'max-lines-per-function': ['error', { max: 80, skipBlankLines: true, skipComments: true, IIFEs: true }],
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...['node:child_process', 'child_process'].map((name) => ({
              name,
              message:
                'processes start only in src/netns/run.ts and src/netns/spawner.ts with src/netns/spawner-child.ts (commands) ' +
                'and src/netns/service.ts (services)',
            })),
          ],
        },
      ],
    },
  },
  {
    // The process runner, its spawner (and the helper process it runs) and the service starter are
    // the only modules that start processes (docs/architecture.md, decision 6).
    files: ['src/netns/run.ts', 'src/netns/spawner.ts', 'src/netns/spawner-child.ts', 'src/netns/service.ts'],
    rules: { 'no-restricted-imports': 'off' },
  },
  {
    // Tests, benchmarks and scripts drive real processes and long scenarios.
    files: ['test/**', 'bench/**', 'scripts/**'],
    rules: { 'no-restricted-imports': 'off', 'max-lines-per-function': 'off', 'max-lines': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['**/*.cjs'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  prettier,
  {
    // After eslint-config-prettier, which turns max-len off.
    plugins: { local },
    rules: {
      'max-len': [
        'error',
        {
          code: 140,
          tabWidth: 2,
          ignoreUrls: true,
          ignoreStrings: true,
          ignoreTemplateLiterals: true,
          ignoreRegExpLiterals: true,
        },
      ],
      'local/hard-line-limit': 'error',
    },
  },
);
