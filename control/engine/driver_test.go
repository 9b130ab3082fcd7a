package engine

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// What sets a kind of network apart is its driver's (driver.Traits and
// the Driver's methods): the engine and the packages that work for it ask
// them, and name drivers in the dispatch (driver.go) alone, so that a new
// driver is one package and one case there.
func TestDriversComparedOnlyInTheDispatch(t *testing.T) {
	var files []string
	for _, dir := range []string{".", "../wiring", "../desired", "../reconcile", "../external", "../pools", "../status", "../publications"} {
		in, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(in) == 0 {
			t.Fatalf("no Go files in %s (%v)", dir, err)
		}
		files = append(files, in...)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "driver.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			b, ok := n.(*ast.BinaryExpr)
			if !ok || (b.Op != token.EQL && b.Op != token.NEQ) {
				return true
			}
			for _, side := range []ast.Expr{b.X, b.Y} {
				if sel, ok := side.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "Driver") {
					if pkg, ok := sel.X.(*ast.Ident); ok && (pkg.Name == "store" || pkg.Name == "api") {
						t.Errorf("%s: compares a driver name (%s.%s): ask driver.Traits, or add a case to driver.go", fset.Position(b.Pos()), pkg.Name, sel.Sel.Name)
					}
				}
			}
			return true
		})
	}
}
