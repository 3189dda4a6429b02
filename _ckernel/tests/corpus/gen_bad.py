#!/usr/bin/env python3
"""Generate _ckernel/tests/corpus/bad/*.ds, the malformed-model corpus.

Each case is written with a marker "\u2588" where the error is expected
(reading /work/shared/DIFFSL.md); the script removes the marker, prepends
"// expect: L:C" (1-based line, byte column) and writes the file as raw bytes
(every character below U+0100 becomes that byte, so "\xff" is a raw 0xff).
A WHOLE marker at the very start means 1:1 (the comment line itself: model-level
errors such as a missing u).  empty.ds gets no comment: its expectation
lives in the sidecar table of test_corpus.c.

Run from anywhere:  python3 _ckernel/tests/corpus/gen_bad.py
The generated files are committed; rerunning rewrites them identically.
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "bad")
M = "\u2588"  # the error is expected here
WHOLE = "\u2589"  # model-level error: expected at 1:1 (on the comment line)

BASE = "in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -k * u }\n"
U1 = "u { 1 }\n"

cases = {}


def case(name, text):
    assert name not in cases, name
    assert text.count(M) + text.count(WHOLE) == 1, name
    cases[name] = text


# ---- truncated input ---------------------------------------------------------
case("trunc_after_name", "in" + M)
case("trunc_after_underscore", M + "in_")
case("trunc_after_lbrace", "in_i {" + M)
case("trunc_after_first_elem", "in_i " + M + "{ k")
case("trunc_after_assign", "in_i { k =" + M)
case("trunc_after_comma", "in_i { k = 0.7," + M)
case("trunc_after_star", BASE[:-len(" u }\n")] + M)
case("trunc_after_minus", "in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF { -" + M)
case("trunc_before_rbrace", "in_i { k = 0.7, a0 = 2.0 }\nu { a0 }\nF " + M + "{ -k * u")
case("trunc_in_exponent", "in_i { k = 0.7, a0 = " + M + "2.0e")
case("trunc_in_exponent_sign", "in_i { k = 0.7, a0 = " + M + "2.0e-")
case("trunc_in_block", "u_i { (0:" + M)
case("trunc_in_block_end", "u_i { (0:2" + M)
case("trunc_after_block_colon", "u_i { (0:2):" + M)
case("trunc_in_call", U1 + "F { sin(u" + M)
case("trunc_in_call_comma", U1 + "F { pow(u," + M)
case("trunc_in_index", "v_i { 1, 2 }\n" + U1 + "F { v_i[" + M)

# ---- stray characters ----------------------------------------------------------
case("stray_dollar", U1 + "F { u " + M + "$ 1 }\n")
case("stray_at", U1 + "F { u + " + M + "@ }\n")
case("stray_hash", M + "# a shell comment\n" + U1 + "F { u }\n")
case("stray_backtick", U1 + "F { " + M + "`u` }\n")
case("stray_semicolon", U1 + M + ";\nF { u }\n")
case("stray_caret_power", U1 + "F { u " + M + "^ 2 }\n")
case("stray_less_than", U1 + "F { u " + M + "< 1 }\n")
case("stray_backslash", U1 + "F { u " + M + "\\ 2 }\n")
case("stray_single_dot", U1 + "F { u" + M + ". }\n")

# ---- unbalanced braces, parentheses, brackets -----------------------------------
case("unbalanced_paren_open", U1 + "F { (u + 1 " + M + "}\n")
case("unbalanced_paren_close", U1 + "F { u + 1" + M + ") }\n")
case("unbalanced_bracket_close", U1 + "F { u " + M + "] }\n")
case("unbalanced_bracket_open", "v_i { 1, 2 }\n" + U1 + "F { v_i[1 " + M + "}\n")
case("unbalanced_extra_rbrace", U1 + "F { u }" + M + "}\n")
case("unbalanced_extra_lbrace", U1 + "F { u }\n" + M + "{\n")
case("unbalanced_missing_lbrace", U1 + "F " + M + "u }\n")
case("unbalanced_brace_in_expr", U1 + "F { u + " + M + "{ 1 } }\n")
case("unclosed_brace_then_next", "u { 1\n" + M + "F { u }\n")

# ---- empty, comments only, unterminated -------------------------------------------
case("only_comments", WHOLE + "// nothing but comments\n/* a block\n   comment */\n// end\n")
case("only_whitespace", WHOLE + "\n   \t\n\n   \n")
case("unterminated_comment", U1 + "F { u }\n" + M + "/* never closed\n u { 2 }\n")
case("unterminated_comment_star", U1 + "F { u } " + M + "/*/")
case("unterminated_string_single", U1 + "F { " + M + "'abc }\n")
case("unterminated_string_double", U1 + "F { read(" + M + "\"c.tns) }\n")
case("unterminated_string_newline", "c_i { (0:2): read(" + M + "'c.\ntns') }\n")

# ---- bytes that are not DiffSL ------------------------------------------------------
case("non_utf8_ff_fe", U1 + "F { u " + M + "\xff\xfe }\n")
case("non_utf8_in_name", "u" + M + "\xc3 { 1 }\nF { u }\n")
case("utf8_mu_name", U1 + "F { " + M + "\xc2\xb5 * u }\n")
case("utf8_bom_after_comment", M + "\xef\xbb\xbfu { 1 }\nF { u }\n")
case("control_char", U1 + "F { u " + M + "\x01 }\n")
rng = random.Random(20240601)
junk = "".join(chr(rng.randrange(1, 256)) for _ in range(400))
case("binary_junk", M + "\x02" + junk)
case("binary_junk_after_model", U1 + "F { u }\n" + M + "\x7f" + junk)

# ---- numbers ------------------------------------------------------------------------
case("number_overflow_1e999", "u { " + M + "1e999 }\nF { u }\n")
case("number_overflow_param", "in_i { k = " + M + "1e999 }\nu { k }\nF { u }\n")
case("number_400_digits", "u { " + M + "1" + "2345678901" * 40 + " }\nF { u }\n")
case("number_leading_dot", "u { " + M + ".5 }\nF { u }\n")
case("number_upper_E", "u { " + M + "1E5 }\nF { u }\n")
case("number_two_points", "u { 1.5" + M + ".3 }\nF { u }\n")
case("number_letter_suffix", "u { " + M + "2x }\nF { u }\n")
case("number_block_huge", "u_i { (0:" + M + "99999999999): 1 }\nF_i { u_i }\n")
case("number_block_400_digits", "u_i { (0:" + M + "9" * 400 + "): 1 }\nF_i { u_i }\n")
case("number_block_float", "u_i { (0:" + M + "2.0): 1 }\nF_i { u_i }\n")

# ---- names --------------------------------------------------------------------------
case("underscore_name_my_k", "in_i { k = 1 }\nu { " + M + "my_k }\nF { u }\n")
case("underscore_digit", "u { 1 }\nF { " + M + "a_1 }\n")
case("underscore_trailing", "u { 1 }\n" + M + "k_ { 2 }\nF { u }\n")
case("underscore_double", "u { 1 }\n" + M + "a_i_j { 2 }\nF { u }\n")
case("unknown_name", U1 + "F { -" + M + "kk * u }\n")
case("use_before_definition", U1 + "F { " + M + "k * u }\nk { 2 }\n")
case("self_reference", "u { " + M + "u }\nF { u }\n")
case("redefine_tensor", "k { 1 }\n" + M + "k { 2 }\n" + U1 + "F { k * u }\n")
case("redefine_u", U1 + M + "u { 2 }\nF { u }\n")
case("redefine_param_as_element", "in_i { k = 1 }\nu_i { " + M + "k = 2 }\nF_i { k }\n")
case("redefine_element_twice", "u_i { x = 1, " + M + "x = 2 }\nF_i { x, x }\n")
case("element_name_with_index", "u_i { " + M + "x_i = 1 }\nF_i { 1 }\n")
case("reserved_t", M + "t { 1 }\n" + U1 + "F { u }\n")
case("reserved_N", M + "N { 1 }\n" + U1 + "F { u }\n")
case("reserved_u0", M + "u0 { 1 }\n" + U1 + "F { u }\n")
case("function_name_as_tensor", M + "sin { 1 }\n" + U1 + "F { u }\n")
case("reserved_t_as_element", "u_i { " + M + "t = 1, y = 2 }\nF_i { t, y }\n")
case("reserved_u0_as_param", "in_i { " + M + "u0 = 1 }\nu { u0 }\nF { u }\n")
case("reserved_N_as_element", "u_i { " + M + "N = 1 }\nF_i { 1 }\n")
case("legacy_in_list", M + "in = [a, b]\nu { a }\nF { b * u }\n")

# ---- model structure ----------------------------------------------------------------
case("missing_u", WHOLE + "in_i { k = 1 }\nF { k }\n")
case("missing_F", WHOLE + "in_i { k = 1 }\nu { k }\n")
case("missing_both", WHOLE + "k { 1 }\n")
case("F_longer_than_u", "u_i { 1, 2 }\n" + M + "F_i { 1, 2, 3 }\n")
case("F_scalar_u_vector", "u_i { 1, 2 }\n" + M + "F { 1 }\n")
case("empty_tensor", U1 + M + "F { }\n")
case("u_depends_on_t", "u { " + M + "t }\nF { u }\n")
case("read_F", U1 + "F { u }\ng { " + M + "F }\n")
case("param_default_expr", "in_i { k = " + M + "1 + 2 }\nu { k }\nF { u }\n")
case("param_without_name", "in_i { " + M + "1 }\nu { 1 }\nF { u }\n")
case("trailing_number", U1 + "F { u }\n" + M + "42\n")
case("double_comma", U1 + "F { u," + M + ", }\n")
case("leading_comma", U1 + "F { " + M + ", u }\n")
case("juxtaposition", U1 + "F { u " + M + "u }\n")
case("number_as_tensor_name", M + "1 { 2 }\n" + U1 + "F { u }\n")

# ---- shapes -------------------------------------------------------------------------
case("shape_mismatch_add", "v_i { 1, 2, 3 }\nw_i { 1, 2 }\nu_i { " + M + "v_i + w_i }\nF_i { u_i }\n")
case("shape_mismatch_block", "v_i { 1, 2 }\nu_i { (0:3): " + M + "v_i }\nF_i { u_i }\n")
case("scalar_two_elements", "k { 1, " + M + "2 }\n" + U1 + "F { u }\n")
case("vector_without_index", "v_i { 1, 2 }\nu_i { " + M + "v }\nF_i { u_i }\n")
case("scalar_with_index", "k { 1 }\nu_i { " + M + "k_i }\nF_i { u_i }\n")
case("block_on_scalar", "k { " + M + "(0:2): 1 }\n" + U1 + "F { u }\n")
case("block_rank_mismatch", "u_i { " + M + "(0:2, 0:2): 1 }\nF_i { u_i }\n")

# ---- functions ----------------------------------------------------------------------
case("unknown_function", U1 + "F { " + M + "foo(u) }\n")
case("arity_sin_two", U1 + "F { " + M + "sin(u, u) }\n")
case("arity_pow_one", U1 + "F { " + M + "pow(u) }\n")
case("arity_exp_zero", U1 + "F { " + M + "exp() }\n")
case("arity_min_three", U1 + "F { 1 + " + M + "min(u, 1, 2) }\n")
case("call_with_index", "u_i { 1 }\nF_i { " + M + "sin_i(u_i) }\n")

# ---- blocks -------------------------------------------------------------------------
case("block_end_equals_start", "u_i { (" + M + "3:3): 1 }\nF_i { u_i }\n")
case("block_end_before_start", "u_i { (" + M + "2:1): 1 }\nF_i { u_i }\n")
case("block_diag_mixed", "A_ij { " + M + "(0..2, 0:2): 1 }\n" + U1 + "F { u }\n")
case("block_diag_mixed_rev", "A_ij { " + M + "(0:2, 0..2): 1 }\n" + U1 + "F { u }\n")
case("block_negative", "u_i { (" + M + "-1:2): 1 }\nF_i { u_i }\n")
case("block_name_before_block", "u_i { x = " + M + "(0:2): 1 }\nF_i { u_i }\n")

# ---- % and strings ------------------------------------------------------------------
case("percent_outside_index", U1 + "F { u " + M + "% 2 }\n")
case("percent_in_u", "u { 7 " + M + "% 2 }\nF { u }\n")
case("string_outside_read", U1 + "F { " + M + "'abc' }\n")
case("string_in_sum", "u { " + M + "\"x\" + 1 }\nF { u }\n")

# ---- deep nesting (parse.c bounds expression nesting; DIFFSL.md states no limit,
# so the expected position is the first token past the compiler's limit of 200) ----
LIMIT = 200
case("deep_parens_5000", U1 + "F { " + "(" * LIMIT + M + "(" * (5000 - LIMIT) + "u" + ")" * 5000 + " }\n")
case("deep_unary_minus_5000", U1 + "F { " + "-" * LIMIT + M + "-" * (5000 - LIMIT) + "u }\n")
case("deep_unary_mixed_5000", U1 + "F { " + "+-" * (LIMIT // 2) + M + "-+" * (2500 - LIMIT // 2) + "u }\n")
case("deep_calls_5000", U1 + "F { " + "sin(" * LIMIT + M + "sin(" * (5000 - LIMIT) + "u" + ")" * 5000 + " }\n")
case("deep_parens_unclosed", U1 + "F { " + "(" * LIMIT + M + "(" * 4800 + "u }\n")

# ---- very long lines ----------------------------------------------------------------
case("long_line_error_at_col_5000", U1 + "F { u" + " + 1" * 1250 + " + " + M + "@ }\n")
case("long_line_unknown_name", U1 + "F { u" + " + sin(u) * (u + 1)" * 600 + " + " + M + "zz }\n")
# an operator chain deeper than parse.c's MAX_TREE (1000) is refused at the operator that passes it
case("deep_plus_chain_5000", U1 + "F { u" + " + u" * 1000 + " " + M + "+ u" + " + u" * 4000 + " }\n")
case("long_name_unknown", U1 + "F { " + M + "x" * 70000 + " }\n")
case("long_comment_line_then_error", "// " + "c" * 100000 + "\n" + U1 + "F { " + M + "$ }\n")


def pos(text, i):
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".ds"):
            os.remove(os.path.join(OUT, f))
    for name, text in sorted(cases.items()):
        if text.startswith(WHOLE):
            line, col = 1, 1
            full = "// expect: 1:1\n" + text[1:]
        else:
            i = text.index(M)
            body = text.replace(M, "")
            line, col = pos(body, i)
            full = "// expect: %d:%d\n" % (line + 1, col) + body
        with open(os.path.join(OUT, name + ".ds"), "wb") as f:
            f.write(full.encode("latin-1"))
    # the empty model: no room for a comment (sidecar table in test_corpus.c)
    open(os.path.join(OUT, "empty.ds"), "wb").close()
    print("wrote %d files to %s" % (len(cases) + 1, OUT))


if __name__ == "__main__":
    main()
