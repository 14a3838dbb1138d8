// Package archrules holds only tests of the rules docs/ARCHITECTURE.md
// states under "Rules of the house": the import rules, checked against
// the imports of every package in the repository (the rules live in the
// document; the test reads them from there, so a rule added to the list
// is a rule checked), and the one form of a duration in a log line,
// checked by type in every log/slog call of the module.
package archrules
