/* An empty C program: built static, it pays glibc's start-up (its CPU probe included). */
int main(void) { return 0; }
