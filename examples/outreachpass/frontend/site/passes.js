// Pure helpers of the pass form, shared by the page and its tests.

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function validatePass(form) {
  const errors = {};
  const email = (form.email || "").trim();
  const event = (form.event || "").trim();
  if (!EMAIL.test(email)) errors.email = "Enter an email address such as ada@example.org.";
  if (!event) errors.event = "Name the event the pass is for.";
  else if (event.length > 80) errors.event = "Keep the event name under 80 characters.";
  return { ok: Object.keys(errors).length === 0, errors, value: { email, event } };
}

export function passLabel(pass) {
  return `${pass.email} — ${pass.event}`;
}
