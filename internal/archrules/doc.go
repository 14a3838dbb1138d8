// Package archrules holds only a test: the import rules that
// docs/ARCHITECTURE.md states under "Rules of the house", checked against
// the imports of every package in the repository. The rules live in the
// document; the test reads them from there, so a rule added to the list is
// a rule checked.
package archrules
