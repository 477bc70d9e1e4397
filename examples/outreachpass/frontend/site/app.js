import { passLabel, validatePass } from "./passes.js";

const form = document.querySelector("#pass-form");
const list = document.querySelector("#passes");
const message = document.querySelector("#message");

async function refresh() {
  const answer = await fetch("/api/passes");
  const body = await answer.json();
  list.replaceChildren(...body.passes.map((pass) => {
    const item = document.createElement("li");
    item.textContent = passLabel(pass);
    return item;
  }));
}

form.addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const check = validatePass(Object.fromEntries(new FormData(form)));
  message.textContent = Object.values(check.errors).join(" ");
  if (!check.ok) return;
  const answer = await fetch("/api/passes", { method: "POST", body: JSON.stringify(check.value) });
  message.textContent = answer.ok ? "Pass issued." : "The pass could not be issued; try again.";
  await refresh();
});

refresh().catch(() => { message.textContent = "The API is not reachable."; });
