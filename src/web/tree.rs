//! The beam-search tree: a column per step, each step's 2·num_beams candidates in rank
//! order, an edge from the beam each continues; kept beams, finished hypotheses (EOS) and
//! pruned candidates told apart, every score on hover.

use leptos::prelude::*;

use crate::engine::decode::beam::{BeamStep, Fate};

const COL: f64 = 96.0;
const ROW: f64 = 24.0;
const NODE_W: f64 = 80.0;
const NODE_H: f64 = 18.0;
const TOP: f64 = 10.0;

/// The node (rank) of the previous step's kept beam `parent`, at step `s` (None before step 0).
fn parent_rank(steps: &[(BeamStep, Vec<String>)], s: usize, parent: usize) -> Option<usize> {
    let previous = &steps[s.checked_sub(1)?].0.candidates;
    previous.iter().position(|c| c.fate == Fate::Kept { slot: parent })
}

/// The nodes `(step, rank)` that spell the finished hypothesis `ids`, root first.
fn path_of(steps: &[(BeamStep, Vec<String>)], ids: &[u32]) -> Vec<(usize, usize)> {
    let Some(last) = ids.len().checked_sub(1).filter(|&s| s < steps.len()) else { return vec![] };
    for (rank, c) in steps[last].0.candidates.iter().enumerate() {
        if !matches!(c.fate, Fate::Finished { .. }) {
            continue;
        }
        let mut path = vec![(last, rank)];
        let mut node = Some(rank);
        for s in (0..=last).rev() {
            let Some(r) = node else { break };
            let c = &steps[s].0.candidates[r];
            if c.token != ids[s] {
                path.clear();
                break;
            }
            if s < last {
                path.push((s, r));
            }
            node = parent_rank(steps, s, c.parent);
        }
        if !path.is_empty() {
            path.reverse();
            return path;
        }
    }
    vec![]
}

/// `best`: the winning hypothesis's ids, whose path is drawn bold.
#[component]
pub fn BeamTree(
    #[prop(into)] steps: Signal<Vec<(BeamStep, Vec<String>)>>,
    #[prop(into)] length_penalty: Signal<f32>,
    #[prop(into)] best: Signal<Option<Vec<u32>>>,
) -> impl IntoView {
    let svg = move || {
        let steps = steps.get();
        let best_path = best.get().map(|ids| path_of(&steps, &ids)).unwrap_or_default();
        let rows = steps.iter().map(|(s, _)| s.candidates.len()).max().unwrap_or(1);
        let (width, height) = (COL * (steps.len() + 1) as f64 + 8.0, TOP * 2.0 + ROW * rows as f64);
        let y = |rank: usize| TOP + ROW * rank as f64 + NODE_H / 2.0;
        let root_y = y(0);
        let columns = steps
            .iter()
            .enumerate()
            .map(|(s, (step, texts))| {
                let x = COL * (s + 1) as f64;
                // Where each kept beam of the previous step sits.
                let parent_y = |parent: usize| parent_rank(&steps, s, parent).map_or(root_y, y);
                let penalty = ((s + 1) as f64).powf(f64::from(length_penalty.get())) as f32;
                let nodes = step
                    .candidates
                    .iter()
                    .zip(texts)
                    .enumerate()
                    .map(|(rank, (c, text))| {
                        let (class, fate) = match c.fate {
                            Fate::Kept { slot } => ("node kept", format!("kept as beam {}", slot + 1)),
                            Fate::Finished { score } => ("node finished", format!("finished hypothesis, score {score:.4}")),
                            Fate::Pruned => ("node pruned", "pruned".to_string()),
                        };
                        let title = format!(
                            "step {} · {text:?} (id {}) · log p {:.4} · sum of log p {:.4} · ÷ length^penalty = {:.4} · {fate}",
                            s + 1,
                            c.token,
                            c.log_prob,
                            c.score,
                            c.score / penalty
                        );
                        let label: String = text.replace(' ', "·").replace('\n', "⏎").chars().take(9).collect();
                        let on_best = if best_path.contains(&(s, rank)) { " best" } else { "" };
                        view! {
                            <line class=format!("edge {class}{on_best}") x1=x - COL + NODE_W x2=x y1=parent_y(c.parent) y2=y(rank)/>
                            <g class=format!("{class}{on_best}")>
                                <title>{title}</title>
                                <rect x=x y=y(rank) - NODE_H / 2.0 width=NODE_W height=NODE_H rx="4"/>
                                <text x=x + 5.0 y=y(rank) + 4.0>{label}</text>
                            </g>
                        }
                    })
                    .collect_view();
                view! { <g class="step" data-step=s>{nodes}</g> }
            })
            .collect_view();
        view! {
            <svg width=width height=height viewBox=format!("0 0 {width} {height}")>
                <g class="node root"><title>"the prompt"</title>
                    <rect x="0" y=root_y - NODE_H / 2.0 width=NODE_W height=NODE_H rx="4"/>
                    <text x="5" y=root_y + 4.0>"prompt"</text></g>
                {columns}
            </svg>
        }
    };
    view! { <div class="tree" data-testid="beam-tree" tabindex="0" role="region" aria-label="the beam search tree (scrolls sideways)">{svg}</div> }
}
