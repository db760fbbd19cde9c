// Proofs: the chain verified whole (and when), its sealed blocks page by page, and any task's
// inclusion proof looked up and checked in the browser.

import { api, problem } from "../client";
import { button, el, notice, row, table } from "../dom";
import { shortId, when } from "../format";
import { verifyInclusion } from "../proof";

const VERIFIED_AT = "koprogo-grid-chain-verified-at";

export async function proofsView(root: HTMLElement, signal: AbortSignal) {
  const verdict = el("p", { id: "chain-verdict", role: "status" });
  const lastVerified = el("p", { id: "chain-verified-at" });
  const blocks = el("div", { id: "blocks" });
  const lookupResult = el("div", { id: "proof-lookup-result", "aria-live": "polite" });
  const taskInput = el("input", { id: "proof-task", type: "text", placeholder: "a task id", autocomplete: "off", spellcheck: "false" });
  const lookup = el("form", { id: "proof-lookup" }, el("label", {}, "Task ", taskInput), el("button", { type: "submit" }, "Check its proof"));
  const showVerified = () => {
    const at = localStorage.getItem(VERIFIED_AT);
    lastVerified.replaceChildren(at ? el("span", {}, "Last verified from this browser: ", when(at)) : "Not verified from this browser yet.");
  };
  const verify = async () => {
    verdict.textContent = "verifying the whole chain…";
    const { data, error } = await api.GET("/v1/proofs/verify");
    if (error || !data) return void (verdict.textContent = problem(error));
    // Each cell has its own chain: with several, each is said.
    const cells = data.cells && data.cells.length > 0 ? data.cells : [data];
    const several = cells.length > 1;
    verdict.textContent = cells.map((chain) => (several ? `Cell ${chain.cell}: ` : "") + (chain.valid
      ? `Chain verified: ${chain.length} v1 links, ${chain.blocks} blocks, ${chain.leaves} leaves; head ${shortId(chain.head_hash)}… at height ${chain.head_height ?? "—"}`
      : `Broken at block ${chain.first_invalid_block ?? "—"}, leaf ${chain.first_invalid_leaf ?? "—"}: ${chain.reason}`)).join(" · ");
    verdict.className = data.valid ? "verified" : "error";
    if (data.valid) localStorage.setItem(VERIFIED_AT, new Date().toISOString());
    showVerified();
  };
  const pages: (number | undefined)[] = [undefined];
  const loadBlocks = async () => {
    const { data, error } = await api.GET("/v1/proofs", { params: { query: { after_height: pages.at(-1), limit: 20 } } });
    if (signal.aborted) return;
    if (error || !data) return void blocks.replaceChildren(notice(problem(error), "error"));
    const next = data.blocks.at(-1)?.height;
    const older = button("Next blocks →", () => { pages.push(next); void loadBlocks(); }, { id: "blocks-next" });
    const newer = button("← Earlier blocks", () => { pages.pop(); void loadBlocks(); }, { id: "blocks-previous" });
    older.disabled = data.blocks.length < 20;
    newer.disabled = pages.length <= 1;
    blocks.replaceChildren(data.blocks.length === 0 ? notice("No block sealed yet.")
      : table(`Sealed blocks of cell ${data.cell}, from the first`, ["Height", "Sealed", "Leaves", "Merkle root", "Hash"],
        data.blocks.map((block) => row([String(block.height), when(block.sealed_at, false), String(block.leaf_count),
          el("code", { title: block.merkle_root }, `${block.merkle_root.slice(0, 12)}…`),
          el("code", { title: block.hash }, `${block.hash.slice(0, 12)}…`)])), { id: "block-list" }),
      el("div", { class: "paging" }, newer, older));
  };
  lookup.addEventListener("submit", async (event) => {
    event.preventDefault();
    const taskId = taskInput.value.trim().toLowerCase();
    const { data, error } = await api.GET("/v1/proofs/tasks/{task_id}", { params: { path: { task_id: taskId } } });
    if (error || !data) return void lookupResult.replaceChildren(notice(problem(error), "error"));
    if (data.proofs.length === 0 && data.links.length === 0) return void lookupResult.replaceChildren(notice("This task has no credit, so no proof."));
    const lines = [];
    for (const proof of data.proofs) {
      if (proof.status !== "sealed") { lines.push(notice("Its block is not sealed yet.")); continue; }
      const broken = await verifyInclusion(proof);
      lines.push(el("p", { class: broken ? "error" : "verified" }, broken ? `Does not hold: ${broken}`
        : `Verified in the browser: leaf ${proof.leaf_index} of block ${proof.block_height} (cell ${proof.cell}), ${proof.audit_path.length} hashes to its root.`));
    }
    if (data.links.length > 0) lines.push(notice(`Chained as ${data.links.length} v1 link(s).`));
    lookupResult.replaceChildren(...lines);
  });
  root.replaceChildren(
    el("h2", {}, "Proofs"),
    el("p", {}, "The green-proof chain: v1 links, then blocks of credits under Merkle roots. Verifying reads it whole and names the first broken block and leaf."),
    button("Verify the chain", () => void verify(), { id: "verify" }), verdict, lastVerified,
    el("h3", {}, "One task's proof"), lookup, lookupResult,
    el("h3", {}, "Blocks"), blocks,
  );
  showVerified();
  await Promise.all([verify(), loadBlocks()]);
}
